"""compose.headers: RFC 2047 encoded words in any charset, folding, address headers.

Checked against Python's own decoders (email.header, email.utils, email.parser with
policy.default): what the writer produces must read back as the input.

Display names made of several encoded words are decoded with `email.header.decode_header`
(RFC 2047 §6.2: white space between adjacent encoded words is ignored). Python 3.11's
policy.default address parser keeps that white space (CPython gh-128110, not fixed in 3.11)
and would report spaces the writer never put in the name; it is used only for names that
fit one encoded word. `make_header` is avoided too: it re-encodes Shift_JIS text as
ISO-2022-JP (email.charset's output charset), which cannot hold half-width katakana.
"""

from __future__ import annotations

import base64
import re
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from email.utils import getaddresses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.compose.charsets import Charset, charset_for
from postroom.compose.headers import (
    address_header,
    encoded_words,
    header_text,
    unstructured_header,
)

CHARSETS = ["utf-8", "iso-8859-1", "iso-2022-jp", "shift_jis"]
WORD = re.compile(r"^=\?(?P<charset>[^?]+)\?(?P<kind>[QB])\?(?P<text>[^?]*)\?=$")
# RFC 2047 §5(3): the only characters a Q-encoded word in a phrase may contain
PHRASE_Q = re.compile(r"^[A-Za-z0-9!*+\-/=_]*$")

# Characters to draw from; each charset keeps those it can encode.
POOL = (
    "abcXYZ019 .,;:!?'\"()<>@[]\\/=_-+*#$%&~`{|}^"
    "éèüßàçñøÅ€Œ"
    "ŁąĘ"
    "ΩαβПривет"
    "あいうアイウ漢字日本語、。ー"
    "🎉😀"
)


def alphabet(charset: Charset) -> str:
    return "".join(c for c in POOL if _fits(c, charset))


def _fits(character: str, charset: Charset) -> bool:
    try:
        charset.encode(character)
    except UnicodeEncodeError:
        return False
    return True


SAMPLES = {
    "utf-8": ["Crème brûlée à Zürich", "こんにちは、世界。日本語のテキスト", "Party 🎉 time",
              "🎉" * 40, "é" * 200, "x" * 300 + "é"],
    "iso-8859-1": ["Crème brûlée à Zürich", "é" * 200, "Ärger über Öl " * 20],
    "iso-2022-jp": ["こんにちは、世界。日本語のテキスト", "漢" * 150,
                    "Hello Привет Ωμεγα 日本語 " * 10, "\uff41\uff42\uff43\u3000全角"],
    "shift_jis": ["こんにちは、世界。日本語のテキスト", "漢" * 150,
                  "Hello Привет Ωμεγα 日本語 " * 10, "ｶﾀｶﾅ半角"],
}
SAMPLE_CASES = [(cs, text) for cs, texts in SAMPLES.items() for text in texts]


def decoded_word(word: str, charset: Charset) -> str:
    """One encoded word decoded on its own, strictly: a split character raises."""
    match = WORD.match(word)
    assert match is not None, word
    assert match["charset"] == charset.mime
    if match["kind"] == "B":
        data = base64.b64decode(match["text"], validate=True)
    else:
        ((data, _),) = decode_header(word)
        assert isinstance(data, bytes)
    if charset.mime == "iso-2022-jp" and b"\x1b" in data:
        last_escape = data.rfind(b"\x1b")
        assert data[last_escape:last_escape + 3] == b"\x1b(B", "a word must end in ASCII"
    return data.decode(charset.codec, "strict")


def rfc2047_decode(value: str) -> str:
    """email.header.decode_header, each chunk decoded with its own charset."""
    chunks = decode_header(value)
    return "".join(
        data.decode(charset or "ascii") if isinstance(data, bytes) else data
        for data, charset in chunks
    )


def assert_words(words: list[str], text: str, charset: Charset) -> None:
    assert all(len(word) <= 75 for word in words), max(words, key=len)
    assert "".join(decoded_word(word, charset) for word in words) == text
    assert rfc2047_decode(" ".join(words)) == text


def parse_headers(*lines: str) -> EmailMessage:
    data = ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode("ascii")
    msg = BytesParser(policy=default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    assert msg.defects == []
    return msg


def unfold(header: str) -> str:
    return re.sub(r"\r\n(?=[ \t])", "", header)


def assert_folded_legally(header: str, limit: int = 998) -> None:
    assert re.search(r"\r(?!\n)|(?<!\r)\n|\r\n(?![ \t])", header) is None, repr(header)
    for line in header.split("\r\n"):
        assert len(line.encode()) <= limit, len(line)
        assert line.strip(), f"a whitespace-only line in {header!r}"


# --- encoded words ---------------------------------------------------------------------------


@pytest.mark.parametrize(("charset_name", "text"), SAMPLE_CASES)
def test_encoded_words_are_short_whole_and_decode_back(charset_name: str, text: str) -> None:
    charset = charset_for(charset_name)
    words = encoded_words(text, charset)
    assert_words(words, text, charset)
    if len(text) > 60:
        assert len(words) > 1


@pytest.mark.parametrize("charset_name", CHARSETS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_encoded_words_round_trip_any_representable_text(charset_name: str,
                                                         data: st.DataObject) -> None:
    charset = charset_for(charset_name)
    text = data.draw(st.text(alphabet(charset), min_size=1, max_size=200))
    assert_words(encoded_words(text, charset), text, charset)


def test_encoded_words_refuse_what_the_charset_cannot_encode() -> None:
    with pytest.raises(UnicodeEncodeError) as info:
        encoded_words("Prix: 5 €", charset_for("iso-8859-1"))
    assert info.value.object[info.value.start] == "€"


@pytest.mark.parametrize(("charset_name", "text"), SAMPLE_CASES)
def test_unstructured_header_decodes_back_through_the_parser(charset_name: str,
                                                             text: str) -> None:
    charset = charset_for(charset_name)
    header = unstructured_header("Subject", text, charset)
    assert_folded_legally(header, limit=78)
    assert header.isascii()
    assert str(parse_headers(header)["Subject"]) == text.strip()


@pytest.mark.parametrize(("charset_name", "text"), SAMPLE_CASES)
def test_address_header_display_name_decodes_back(charset_name: str, text: str) -> None:
    charset = charset_for(charset_name)
    header = address_header("To", text, "ann@example.org", charset)
    assert_folded_legally(header, limit=78)
    ((name, address),) = getaddresses([unfold(header).split(":", 1)[1]])
    assert (rfc2047_decode(name), address) == (text.strip(), "ann@example.org")
    (parsed,) = parse_headers(header)["To"].addresses
    assert parsed.addr_spec == "ann@example.org"
    if len(encoded_words(text.strip(), charset)) == 1:  # see the module docstring
        assert parsed.display_name == text.strip()
    for word in re.findall(r"=\?[^?]+\?Q\?[^?]*\?=", header):
        assert PHRASE_Q.match(word.split("?")[3]), word


@pytest.mark.parametrize("charset_name", CHARSETS)
@pytest.mark.parametrize("lookalike", ["=?utf-8?b?SGVsbG8=?=", "=?iso-8859-1?q?caf=E9?=",
                                       "x =?utf-8?q?y?= z"])
def test_encoded_word_lookalike_decodes_to_itself(charset_name: str, lookalike: str) -> None:
    charset = charset_for(charset_name)
    msg = parse_headers(unstructured_header("Subject", lookalike, charset),
                        address_header("To", lookalike, "ann@example.org", charset))
    assert str(msg["Subject"]) == lookalike
    assert msg["To"].addresses[0].display_name == lookalike


# --- plain ASCII folding ---------------------------------------------------------------------


@pytest.mark.parametrize("words", [10, 40, 300])
def test_plain_ascii_is_folded_at_spaces_within_78(words: int) -> None:
    value = " ".join(f"word{i}" for i in range(words))
    header = unstructured_header("Subject", value, charset_for("utf-8"))
    assert "=?" not in header  # plain text stays readable
    assert_folded_legally(header, limit=78)
    assert unfold(header) == f"Subject: {value}"
    assert str(parse_headers(header)["Subject"]) == value


def test_a_word_longer_than_a_line_stays_whole_on_its_own_line() -> None:
    long_word = "x" * 200
    value = f"before {long_word} after"
    header = unstructured_header("Subject", value, charset_for("utf-8"))
    assert header.split("\r\n") == ["Subject: before", f" {long_word}", " after"]
    assert unfold(header) == f"Subject: {value}"


def test_a_word_too_long_for_any_line_is_encoded() -> None:
    value = "y" * 2000
    header = unstructured_header("Subject", value, charset_for("utf-8"))
    assert_folded_legally(header, limit=78)
    assert str(parse_headers(header)["Subject"]) == value


def test_double_space_at_fold_point_gives_no_whitespace_only_line() -> None:
    value = "A" * 70 + "  " + "B" * 77  # e.g. "Hi {{ first_name }} {{ last_name }}", no first
    header = unstructured_header("Subject", value, charset_for("utf-8"))
    assert str(parse_headers(header)["Subject"]) == value  # reads back either way
    assert_folded_legally(header)  # a 77-octet word after two spaces cannot fit 78 columns


# --- no line breaks from data ----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(value=st.text(alphabet=st.sampled_from("ab é\r\n\t\x00\x0b\x85\u2028\u2029:<>\"\\,"),
                     max_size=120))
def test_no_data_can_break_a_header_line(value: str) -> None:
    charset = charset_for("utf-8")
    for header in (unstructured_header("Subject", value, charset),
                   address_header("To", value, "ann@example.org", charset)):
        assert_folded_legally(header)
        msg = parse_headers(header)
        assert len(msg.keys()) == 1


@pytest.mark.parametrize("control", ["\x80", "\x85", "\x9b", "\x9f", "\u202a", "\u202b", "\u202c",
                                     "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
                                     "\u2069", "\u202e\x9b\u2066"])
def test_c1_controls_and_bidi_overrides_become_one_space(control: str) -> None:
    """Issue 12: the docs promise control characters become spaces; C1 controls (but NEL)
    and bidi overrides (which can show `gpj.exe` as `exe.jpg`) went through."""
    value = f"Invoice{control}gpj.exe"
    assert header_text(value) == "Invoice gpj.exe"
    msg = parse_headers(unstructured_header("Subject", value, charset_for("utf-8")))
    assert str(msg["Subject"]) == "Invoice gpj.exe"


@pytest.mark.parametrize("value", ["Ann\r\nBcc: x@evil.example", "Ann\nBcc: x@evil.example",
                                   "Ann\rBcc: x@evil.example", "Ann\u2028Bcc: x@evil.example"])
def test_header_text_turns_any_line_break_into_one_space(value: str) -> None:
    assert header_text(value) == "Ann Bcc: x@evil.example"
    charset = charset_for("utf-8")
    msg = parse_headers(unstructured_header("Subject", value, charset),
                        address_header("To", value, "ann@example.org", charset))
    assert msg.keys() == ["Subject", "To"]
    assert str(msg["Subject"]) == "Ann Bcc: x@evil.example"
    assert [a.addr_spec for a in msg["To"].addresses] == ["ann@example.org"]


# --- address headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        'Lee, "Ann"',
        "back\\slash",
        'a\\"b',
        "\\",
        "Smith, J.",
        '"quoted"',
        "O'Brien",
        "x (not a comment) y",
        "Boss <boss@evil.example>",
        "a;b:c@d",
        "Ann, Bob <b@x.example>, Carl",
    ],
)
def test_address_header_specials_parse_back(name: str) -> None:
    header = address_header("To", name, "ann@example.org", charset_for("utf-8"))
    assert_folded_legally(header, limit=78)
    assert getaddresses([header.split(":", 1)[1]]) == [(name, "ann@example.org")]
    (address,) = parse_headers(header)["To"].addresses
    assert (address.display_name, address.addr_spec) == (name, "ann@example.org")


def test_address_header_atom_name_is_not_quoted() -> None:
    assert address_header("To", "Ann Lee", "ann@example.org", charset_for("utf-8")) == (
        "To: Ann Lee <ann@example.org>")


def test_address_header_without_name_is_the_bare_address() -> None:
    for name in ("", "  ", "\r\n"):
        assert address_header("To", name, "ann@example.org", charset_for("utf-8")) == (
            "To: ann@example.org")


def test_address_goes_to_its_own_line_when_the_name_fills_the_first() -> None:
    name = "Zoë Müller-Lüdenscheidt"  # one encoded word of 46 characters
    address = "a.rather.long.address@subdomain.example.org"
    header = address_header("To", name, address, charset_for("utf-8"))
    assert header.split("\r\n")[1] == f" <{address}>"
    assert_folded_legally(header, limit=78)
    (parsed,) = parse_headers(header)["To"].addresses
    assert (parsed.display_name, parsed.addr_spec) == (name, address)


@pytest.mark.parametrize("name", ["x" * 1500, "Ann Lee " * 200])
def test_long_ascii_display_name_keeps_lines_legal(name: str) -> None:
    header = address_header("To", name, "ann@example.org", charset_for("utf-8"))
    assert_folded_legally(header)
    raw = header.split(":", 1)[1].rsplit("<", 1)[0]
    # Decoded with decode_header: CPython's address parser puts a space between adjacent
    # encoded words of a display name (gh-128110), which RFC 2047 §6.2 says to drop.
    decoded = str(make_header(decode_header(raw.replace("\r\n", "")))).strip().strip('"')
    assert decoded == name.strip()
