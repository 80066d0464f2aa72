"""compose.charsets, compose.tokens and compose.extra_headers: small pure helpers."""

from __future__ import annotations

import pytest

from postroom.compose.charsets import Charset, Unrepresentable, charset_for, first_unrepresentable
from postroom.compose.extra_headers import OWNED_HEADERS, parse_extra_headers
from postroom.compose.tokens import MIRROR, UNSUBSCRIBE, make_token, read_token
from postroom.errors import InputError

# --- charsets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "codec", "mime"),
    [
        ("utf-8", "utf-8", "utf-8"),
        ("UTF8", "utf-8", "utf-8"),
        (" utf-8 ", "utf-8", "utf-8"),
        ("latin-1", "iso8859-1", "iso-8859-1"),
        ("ISO_8859-1", "iso8859-1", "iso-8859-1"),
        ("iso-8859-1", "iso8859-1", "iso-8859-1"),
        ("l1", "iso8859-1", "iso-8859-1"),
        ("iso-8859-15", "iso8859-15", "iso-8859-15"),
        ("cp1252", "cp1252", "windows-1252"),
        ("windows-1252", "cp1252", "windows-1252"),
        ("sjis", "shift_jis", "shift_jis"),
        ("Shift_JIS", "shift_jis", "shift_jis"),
        ("iso2022_jp", "iso2022_jp", "iso-2022-jp"),
        ("ISO-2022-JP", "iso2022_jp", "iso-2022-jp"),
        ("us-ascii", "ascii", "us-ascii"),
        ("eucjp", "euc_jp", "euc-jp"),
        ("koi8_r", "koi8-r", "koi8-r"),
    ],
)
def test_charset_for_aliases(name: str, codec: str, mime: str) -> None:
    assert charset_for(name) == Charset(codec, mime)


@pytest.mark.parametrize("name", ["klingon", "", "utf-16", "utf-8-sig", "cp932", "latin-2"])
def test_charset_for_unknown_lists_the_supported_ones(name: str) -> None:
    with pytest.raises(InputError) as info:
        charset_for(name)
    message = str(info.value)
    assert message.startswith(f"charset {name!r} is not supported (use one of: ")
    listed = message.split("use one of: ", 1)[1].rstrip(")").split(", ")
    assert listed == sorted(listed)
    assert {"utf-8", "iso-8859-1", "iso-2022-jp", "shift_jis", "windows-1252"} <= set(listed)


def test_is_utf8() -> None:
    assert charset_for("utf8").is_utf8
    assert not charset_for("latin-1").is_utf8


@pytest.mark.parametrize(
    ("text", "charset", "expected"),
    [
        ("Crème brûlée", "iso-8859-1", None),
        ("Prix: 5 €", "iso-8859-1", Unrepresentable("€", 8)),
        ("Prix: 5 €", "windows-1252", None),
        ("Prix: 5 €", "iso-8859-15", None),
        ("Łukasz", "iso-8859-1", Unrepresentable("Ł", 0)),
        ("ab🎉c🎉", "iso-2022-jp", Unrepresentable("🎉", 2)),
        ("日本語", "shift_jis", None),
        ("日本語 é", "shift_jis", Unrepresentable("é", 4)),
        ("ｶﾀｶﾅ", "iso-2022-jp", Unrepresentable("ｶ", 0)),  # half-width katakana
        ("ｶﾀｶﾅ", "shift_jis", None),
        ("anything 🎉 at all \udc80", "utf-8", None),  # UTF-8 is never checked
        ("", "iso-8859-1", None),
    ],
)
def test_first_unrepresentable(text: str, charset: str,
                               expected: Unrepresentable | None) -> None:
    assert first_unrepresentable(text, charset_for(charset)) == expected


def test_unrepresentable_describe_names_character_position_and_charset() -> None:
    problem = first_unrepresentable("Prix: 5 €", charset_for("latin-1"))
    assert problem is not None
    assert problem.describe(charset_for("latin-1"), "subject") == (
        "subject: the character '€' (U+20AC) at position 9 cannot be encoded in iso-8859-1")


def test_charset_encode_is_strict() -> None:
    with pytest.raises(UnicodeEncodeError):
        charset_for("latin-1").encode("€")
    assert charset_for("latin-1").encode("é") == b"\xe9"


# --- tokens ----------------------------------------------------------------------------------

SECRET = b"s" * 32


@pytest.mark.parametrize("log_id", [0, 1, 42, 10**17, 10**18 - 1])
@pytest.mark.parametrize("purpose", [MIRROR, UNSUBSCRIBE])
def test_token_round_trip(purpose: str, log_id: int) -> None:
    token = make_token(SECRET, purpose, log_id)
    head, mac = token.split(".")
    assert head == str(log_id)
    assert len(mac) == 22  # 128 bits, URL-safe base64 without padding
    assert set(mac) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert read_token(SECRET, purpose, token) == log_id


def test_tokens_differ_by_purpose_id_and_secret() -> None:
    tokens = {make_token(SECRET, MIRROR, 1), make_token(SECRET, UNSUBSCRIBE, 1),
              make_token(SECRET, MIRROR, 2), make_token(b"t" * 32, MIRROR, 1)}
    assert len(tokens) == 4


def _changed(token: str, index: int) -> str:
    character = token[index]
    replacement = "A" if character != "A" else "B"
    if character.isdigit():
        replacement = "1" if character != "1" else "2"
    return token[:index] + replacement + token[index + 1:]


def test_one_changed_character_anywhere_fails() -> None:
    token = make_token(SECRET, UNSUBSCRIBE, 12345)
    for index in range(len(token)):
        if token[index] == ".":
            continue
        changed = _changed(token, index)
        assert changed != token
        assert read_token(SECRET, UNSUBSCRIBE, changed) is None, changed


def test_wrong_purpose_or_secret_fails() -> None:
    token = make_token(SECRET, MIRROR, 7)
    assert read_token(SECRET, UNSUBSCRIBE, token) is None
    assert read_token(b"t" * 32, MIRROR, token) is None


def test_mac_of_another_id_fails() -> None:
    mac = make_token(SECRET, MIRROR, 7).split(".")[1]
    assert read_token(SECRET, MIRROR, f"8.{mac}") is None


@pytest.mark.parametrize(
    "head",
    ["", "-7", "+7", " 7", "7 ", "0x7", "7.0", "1e3", "\uff17", "\u0667", "1" * 19, "007", "07"],
)
def test_non_canonical_ids_fail(head: str) -> None:
    """Only the canonical decimal form of the id verifies (no sign, no leading zero...)."""
    mac = make_token(SECRET, MIRROR, 7).split(".")[1]
    assert read_token(SECRET, MIRROR, f"{head}.{mac}") is None


def test_leading_zeros_fail_even_with_the_right_mac() -> None:
    token = make_token(SECRET, MIRROR, 42)
    assert read_token(SECRET, MIRROR, "0" + token) is None
    assert read_token(SECRET, MIRROR, "00" + token) is None


@pytest.mark.parametrize("token", ["", ".", "7", "7.", ".abc", "abc", "7..x", "proof"])
def test_malformed_tokens_fail(token: str) -> None:
    assert read_token(SECRET, MIRROR, token) is None


@pytest.mark.parametrize("head", ["²", "7²", "①"])
def test_digit_like_characters_fail_without_raising(head: str) -> None:
    mac = make_token(SECRET, MIRROR, 7).split(".")[1]
    assert read_token(SECRET, MIRROR, f"{head}.{mac}") is None


# --- extra headers ---------------------------------------------------------------------------


def test_extra_headers_valid_lines() -> None:
    text = "X-Campaign: spring-2024\n\n  X-Priority :  3  \r\nPrecedence: bulk\nX-Note: a: b"
    assert parse_extra_headers(text) == (
        ("X-Campaign", "spring-2024"), ("X-Priority", "3"), ("Precedence", "bulk"),
        ("X-Note", "a: b"),
    )


def test_extra_headers_empty() -> None:
    assert parse_extra_headers("") == ()
    assert parse_extra_headers("\n  \n") == ()


@pytest.mark.parametrize("name", sorted(OWNED_HEADERS))
def test_owned_headers_are_refused(name: str) -> None:
    for spelled in (name, name.upper(), name.title()):
        with pytest.raises(InputError) as info:
            parse_extra_headers(f"X-Ok: 1\n{spelled}: value")
        assert str(info.value) == (f"extra_headers, line 2: {spelled} is written by Postroom "
                                   "and cannot be set here")


def test_owned_headers_include_the_dangerous_ones() -> None:
    assert {"from", "to", "cc", "bcc", "subject", "list-unsubscribe", "list-unsubscribe-post",
            "dkim-signature", "content-type", "content-transfer-encoding",
            "mime-version", "message-id", "sender", "reply-to", "return-path"} <= OWNED_HEADERS


@pytest.mark.parametrize("name", ["X Foo", "X_Foo", "-X", "Été", "X" * 77, "X.Y",
                                  "X@Y", ""])
def test_bad_header_names_are_refused(name: str) -> None:
    with pytest.raises(InputError) as info:
        parse_extra_headers(f"\n{name}: value")
    assert str(info.value).startswith("extra_headers, line 2: ")
    assert "is not a valid header name" in str(info.value)


def test_longest_valid_name() -> None:
    assert parse_extra_headers("X" * 76 + ": v") == (("X" * 76, "v"),)


@pytest.mark.parametrize("line", ["X-Empty:", "X-Empty:   ", "X-Empty:\t"])
def test_missing_value_is_refused(line: str) -> None:
    with pytest.raises(InputError, match=r"^extra_headers, line 3: X-Empty has no value$"):
        parse_extra_headers(f"X-A: 1\nX-B: 2\n{line}")


@pytest.mark.parametrize("line", ["X-No-Colon", " continued value"])
def test_line_without_colon_is_refused(line: str) -> None:
    with pytest.raises(InputError, match=r"^extra_headers, line 2: expected `Name: value`$"):
        parse_extra_headers(f"X-A: 1\n{line}")


def test_line_numbers_count_blank_lines() -> None:
    with pytest.raises(InputError, match=r"line 5: "):
        parse_extra_headers("X-A: 1\n\n\nX-B: 2\nBcc: x@evil.example")
