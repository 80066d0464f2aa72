"""Character encodings a delivery may force, and the check that content fits one.

Nothing is ever encoded with replacement characters: a character the charset cannot represent
is reported (which one, where) instead.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from postroom.errors import InputError

__all__ = ["Charset", "Unrepresentable", "charset_for", "first_unrepresentable"]

# Python codec name → the charset's preferred MIME name (IANA).
_MIME_NAMES = {
    "utf-8": "utf-8",
    "ascii": "us-ascii",
    "iso8859-1": "iso-8859-1",
    "iso8859-15": "iso-8859-15",
    "cp1252": "windows-1252",
    "iso2022_jp": "iso-2022-jp",
    "shift_jis": "shift_jis",
    "euc_jp": "euc-jp",
    "euc_kr": "euc-kr",
    "gb2312": "gb2312",
    "gbk": "gbk",
    "koi8-r": "koi8-r",
}
# Codecs whose escape sequences carry state from one character to the next: the bytes of a text
# are not the bytes of its characters put end to end (ISO-2022-JP returns to ASCII at the end).
_STATEFUL = frozenset({"iso2022_jp"})


@dataclass(frozen=True, slots=True)
class Charset:
    codec: str  # Python's name
    mime: str  # the name written in Content-Type and encoded words

    @property
    def is_utf8(self) -> bool:
        return self.codec == "utf-8"

    @property
    def stateless(self) -> bool:
        """Whether encoding is per character: encode(a + b) == encode(a) + encode(b), and no
        character but a line feed encodes to a byte 0x0A (true of every charset but
        ISO-2022-JP; an unknown codec counts as stateful)."""
        return self.codec in _MIME_NAMES and self.codec not in _STATEFUL

    def encode(self, text: str) -> bytes:
        return text.encode(self.codec, "strict")


@dataclass(frozen=True, slots=True)
class Unrepresentable:
    character: str
    index: int  # position in the text, from 0

    def describe(self, charset: Charset, where: str) -> str:
        return (f"{where}: the character {self.character!r} (U+{ord(self.character):04X}) at "
                f"position {self.index + 1} cannot be encoded in {charset.mime}")


def charset_for(name: str) -> Charset:
    """The charset a user named (any common alias), or InputError listing the supported ones."""
    try:
        codec = codecs.lookup(name.strip()).name
    except LookupError:
        codec = ""
    if codec not in _MIME_NAMES:
        supported = ", ".join(sorted(set(_MIME_NAMES.values())))
        raise InputError(f"charset {name!r} is not supported (use one of: {supported})")
    return Charset(codec, _MIME_NAMES[codec])


def first_unrepresentable(text: str, charset: Charset) -> Unrepresentable | None:
    """The first character of `text` that `charset` cannot encode, if any."""
    if charset.is_utf8:
        return None
    try:
        charset.encode(text)
    except UnicodeEncodeError as exc:
        return Unrepresentable(text[exc.start], exc.start)
    return None
