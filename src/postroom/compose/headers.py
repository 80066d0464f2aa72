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

__all__ = ["address_header", "encoded_words", "header_text", "unstructured_header"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
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


def _q(data: bytes) -> str:
    return "".join(
        chr(b) if b in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}" for b in data
    )


def _b(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encoded_words(text: str, charset: Charset) -> list[str]:
    """`text` as RFC 2047 encoded words, each at most _WORD_LENGTH characters.

    Words break between characters (never inside a multibyte sequence); each word's bytes are
    encoded on their own, so stateful charsets (ISO-2022-JP) return to ASCII in every word.
    Raises UnicodeEncodeError when `charset` cannot represent a character.
    """
    data = charset.encode(text)
    mostly_ascii = sum(b < 0x80 for b in data) >= 0.8 * max(1, len(data))
    use_q = mostly_ascii and charset.mime not in _B_ONLY
    kind, encode = ("Q", _q) if use_q else ("B", _b)
    room = _WORD_LENGTH - len(charset.mime) - 7
    words: list[str] = []
    chunk = ""
    for character in text:
        candidate = chunk + character
        if chunk and len(encode(charset.encode(candidate))) > room:
            words.append(f"=?{charset.mime}?{kind}?{encode(charset.encode(chunk))}?=")
            chunk = character
        else:
            chunk = candidate
    if chunk or not words:
        words.append(f"=?{charset.mime}?{kind}?{encode(charset.encode(chunk))}?=")
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
    display_name = header_text(display_name)
    if not display_name:
        return f"{name}: {address}"
    words = _phrase(display_name, charset)
    lines = [f"{name}: {words[0]}"]
    for word in words[1:]:
        lines.append(f" {word}")
    if len(lines[-1]) + len(address) + 3 > _FOLD_AT:
        lines.append(f" <{address}>")
    else:
        lines[-1] += f" <{address}>"
    return "\r\n".join(lines)
