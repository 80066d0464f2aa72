"""Header values as RFC 5322 lines: folding, RFC 2047 encoded words in any charset, addresses.

Hand-written rather than `email.policy` because headers must be encoded in the delivery's
charset (ISO-2022-JP, Shift_JIS, ...) and the output must be byte-for-byte predictable; see
docs/adr/0008-mime-writer.md. Values that come from data pass through `header_text` first, so
no data can start a new header line.
"""

from __future__ import annotations

import base64
import re

from postroom.compose.charsets import Charset

__all__ = [
    "address_header",
    "encoded_words",
    "header_text",
    "phrase_lines",
    "place_address",
    "unstructured_header",
]

# C0 and C1 controls, DEL, Unicode line and paragraph separators, and the bidi embeddings,
# overrides and isolates (U+202A-U+202E, U+2066-U+2069), which can reorder what a reader sees.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")
_WORD_LENGTH = 66  # an encoded word, so that "Subject: " + word stays under 78 columns
_FOLD_AT = 78
_LONG_PHRASE = 200  # longer display names go out as encoded words, which fold
# Charsets whose encoded words use B (RFC 1468 for ISO-2022-JP; multibyte East Asian sets).
_B_ONLY = frozenset({"iso-2022-jp", "shift_jis", "euc-jp", "euc-kr", "gb2312", "gbk"})
_ATOM_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*$")
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")


def header_text(value: str) -> str:
    """A header value from data: every line break or control character becomes one space."""
    return _CONTROL.sub(" ", value).strip()


# The Q encoding of each byte (RFC 2047 §4.2): safe characters as is, space as "_", else =XX.
_Q_BYTES = tuple(chr(b) if b in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}"
                 for b in range(256))
_ASCII = bytes(range(0x80))
# Per stateless charset and kind (Q or not): character → what it adds to an encoded word.
_COSTS: dict[tuple[Charset, bool], dict[str, int]] = {}


def _q(data: bytes) -> str:
    return "".join([_Q_BYTES[b] for b in data])


def _b(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encoded_words(text: str, charset: Charset) -> list[str]:
    """`text` as RFC 2047 encoded words, each at most _WORD_LENGTH characters.

    Words break between characters (never inside a multibyte sequence); each word's bytes are
    encoded on their own, so stateful charsets (ISO-2022-JP) return to ASCII in every word.
    Raises UnicodeEncodeError when `charset` cannot represent a character.

    A word takes characters while they fit (one that does not fit even alone gets a word of its
    own). With a stateless charset a word's bytes are its characters' bytes end to end, so what
    each character adds is looked up once and summed: the work is linear in the text.
    """
    data = charset.encode(text)
    ascii_bytes = len(data) - len(data.translate(None, _ASCII))
    mostly_ascii = ascii_bytes >= 0.8 * max(1, len(data))
    use_q = mostly_ascii and charset.mime not in _B_ONLY
    kind = "Q" if use_q else "B"
    room = _WORD_LENGTH - len(charset.mime) - 7
    if not charset.stateless:
        return _words_by_candidate(text, charset, kind, room)
    costs = _COSTS.setdefault((charset, use_q), {})
    # Q: a word's length is the sum of its bytes' lengths; B: 4 characters per 3 bytes (or
    # part of 3), so at most 3 * (room // 4) bytes fit.
    limit = room if use_q else 3 * (room // 4)
    head = f"=?{charset.mime}?{kind}?"
    encode = _q if use_q else _b
    words: list[str] = []
    start = total = 0
    for index, character in enumerate(text):
        cost = costs.get(character)
        if cost is None:
            encoded = charset.encode(character)
            cost = costs[character] = len(_q(encoded)) if use_q else len(encoded)
        if total + cost > limit and index > start:
            words.append(f"{head}{encode(charset.encode(text[start:index]))}?=")
            start, total = index, cost
        else:
            total += cost
    if start < len(text) or not words:
        words.append(f"{head}{encode(charset.encode(text[start:]))}?=")
    return words


def _words_by_candidate(text: str, charset: Charset, kind: str, room: int) -> list[str]:
    """encoded_words for a stateful charset, whose escape sequences depend on the neighbours:
    each candidate word is encoded whole.

    A longer candidate never encodes shorter (every character adds bytes; the return to ASCII
    at the end is there at most once), so the longest word that fits is found by bisection.
    """
    encode = _q if kind == "Q" else _b

    def fits(start: int, end: int) -> bool:
        size = len(charset.encode(text[start:end]))
        length = len(_q(charset.encode(text[start:end]))) if kind == "Q" else 4 * -(-size // 3)
        return length <= room

    words: list[str] = []
    start = 0
    while start < len(text) or not words:
        low, high = start + 1, len(text)  # a word takes at least one character
        while low < high:  # the last end in (low, high] that fits, else low
            middle = (low + high + 1) // 2
            if fits(start, middle):
                low = middle
            else:
                high = middle - 1
        end = low if text else 0
        words.append(f"=?{charset.mime}?{kind}?{encode(charset.encode(text[start:end]))}?=")
        start = end
    return words


def _fold_plain(name: str, value: str) -> str | None:
    """Fold plain ASCII text at spaces; None when a word is too long to fit a line."""
    lines: list[str] = []
    current = f"{name}:"
    pending = ""  # extra spaces of a run travel with the next word: no blank folded lines
    for piece in value.split(" "):
        if not piece:
            pending += " "
            continue
        word, pending = pending + piece, ""
        if len(word) > 900:
            return None
        if len(current) + 1 + len(word) > _FOLD_AT and current.strip() != f"{name}:":
            lines.append(current)
            current = ""
        current += " " + word
    lines.append(current)
    return "\r\n".join(lines)


def _needs_encoding(value: str) -> bool:
    return not value.isascii() or "=?" in value


def unstructured_header(name: str, value: str, charset: Charset) -> str:
    """`Name: value` (folded, without the final CRLF) for Subject and other free text."""
    value = header_text(value)
    if not _needs_encoding(value):
        folded = _fold_plain(name, value)
        if folded is not None:
            return folded
    return f"{name}: " + "\r\n ".join(encoded_words(value, charset))


def _phrase(display_name: str, charset: Charset) -> list[str]:
    """The display name as the words of a header, to be joined by folding whitespace."""
    words = display_name.split(" ")
    if _needs_encoding(display_name) or any(len(word) > 900 for word in words):
        # Encoded words also split a name too long for one line into legal pieces.
        return encoded_words(display_name, charset)
    if _ATOM_PHRASE.match(display_name) and len(display_name) <= _LONG_PHRASE:
        return [display_name]
    escaped = display_name.replace("\\", "\\\\").replace('"', '\\"')
    if len(escaped) <= _LONG_PHRASE:
        return [f'"{escaped}"']
    # A long plain name: one quoted string, folded at its spaces (RFC 5322 FWS).
    pieces = escaped.split(" ")
    pieces[0], pieces[-1] = '"' + pieces[0], pieces[-1] + '"'
    lines: list[str] = []
    for piece in pieces:
        if lines and len(lines[-1]) + 1 + len(piece) <= _FOLD_AT - 2:
            lines[-1] += " " + piece
        else:
            lines.append(piece)
    return lines


def address_header(name: str, display_name: str, address: str, charset: Charset) -> str:
    """`Name: display <address>`; `address` must already be in its header form (A-labels)."""
    return place_address(name, phrase_lines(name, display_name, charset), address)


def phrase_lines(name: str, display_name: str, charset: Charset) -> tuple[str, ...]:
    """The lines of `Name: display` before the address (none without a display name): what
    `address_header` writes for a display name whatever the address."""
    display_name = header_text(display_name)
    if not display_name:
        return ()
    words = _phrase(display_name, charset)
    return (f"{name}: {words[0]}", *(f" {word}" for word in words[1:]))


def place_address(name: str, lines: tuple[str, ...], address: str) -> str:
    """The address header of `phrase_lines(name, ...)` and `address`: on the last line when it
    fits, else on a line of its own."""
    if not lines:
        return f"{name}: {address}"
    if len(lines[-1]) + len(address) + 3 > _FOLD_AT:
        return "\r\n".join((*lines, f" <{address}>"))
    return "\r\n".join((*lines[:-1], f"{lines[-1]} <{address}>"))
