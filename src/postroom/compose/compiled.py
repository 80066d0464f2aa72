"""The compiled message path (issue 16, ADR 0029): the messages of one delivery and one shape
as a byte skeleton, with only the personalized pieces encoded per recipient.

A shape is the parts a message has (multipart, HTML, text) and whether its headers may carry raw
UTF-8. `compile_shape` either returns a `CompiledShape` or the reason the general writer
(`mime.MessageWriter`) must write that shape; the decision is made once per plan and shape.

What a compiled shape holds, made once: the header lines every message shares (From, Reply-To,
the extra headers, MIME-Version, the part headers of each transfer encoding), and each part's
template cut at line ends into runs of complete literal lines, pre-encoded (charset bytes,
CRLF form, quoted-printable form, and what the choice of transfer encoding needs: ASCII or not,
longest line, sizes), and the lines that hold a value. Per recipient it renders only the
lines with values, encodes them the way the general writer does (the same header functions for
To and Subject, `binascii.b2a_qp` per line, base64 when that is shorter) and joins.

It renders what the general writer renders, byte for byte, or nothing: `CompiledShape.write`
returns None for a message it cannot vouch for (a value that is not a string or is missing, a
character the charset cannot encode, an output past the template size limit), and the caller
writes that message the general way, which also raises the general way's error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any, NamedTuple

from markupsafe import escape

from postroom.compose.dkim import body_hash, canonical_lines
from postroom.compose.headers import phrase_lines, place_address, unstructured_header
from postroom.compose.mime import EncodingError, MessageWriter, Parts, _part_headers
from postroom.compose.personalize import CompiledContent
from postroom.compose.segments import Segments, Slot
from postroom.domain.models import Recipient

__all__ = ["CompiledShape", "Written", "compile_shape"]

_MAX_LINE = 998
_STYLE = "<style"
_REMEMBERED = 4096
_RECIPIENT_ATTRIBUTES = frozenset({"email", "first_name", "last_name"})


class Written(NamedTuple):
    """A message from the compiled path."""

    data: bytes
    mirror: bytes | None  # the HTML part's decoded bytes, when asked for and not empty
    head: int  # the size of the header block, through its empty line
    body_hash: bytes | None  # DKIM's bh= of the body, when asked for


@dataclass(frozen=True, slots=True)
class _Lines:
    """Complete literal lines every message shares, in every form a part may need."""

    lf: bytes  # in the charset, each line ended by LF
    crlf: bytes  # the same with CRLF: the 7bit body, and the decoded bytes
    qp: bytes  # quoted-printable, CRLF
    plain: bool  # ASCII without NUL, no line longer than 998 octets (7bit possible)


@dataclass(frozen=True, slots=True)
class _Line:
    """One line with values: literal text and slot numbers, through the line's LF (the last
    line of a part may have none)."""

    pieces: tuple[str | int, ...]


class _Part:
    """One body part's template: its items, and their literal forms laid out with a gap at each
    line with values."""

    __slots__ = ("crlf", "crlf_canonical", "dynamic", "html", "qp", "qp_canonical", "slots",
                 "static_chars", "static_plain", "static_qp", "static_raw")

    def __init__(self, items: list[_Lines | _Line], static_chars: int, slots: tuple[int, ...],
                 html: bool):
        if not items:
            items = [_Lines(b"\n", b"\r\n", b"\r\n", True)]  # an empty part is one empty line
        self.static_chars = static_chars  # characters of literal text
        self.slots = slots  # the slot numbers the template prints, with repeats
        self.html = html  # values are HTML-escaped
        static = [item for item in items if isinstance(item, _Lines)]
        self.static_plain = all(item.plain for item in static)
        self.static_raw = sum(len(item.crlf) for item in static)
        self.static_qp = sum(len(item.qp) for item in static)
        self.crlf = [item.crlf if isinstance(item, _Lines) else b"" for item in items]
        self.qp = [item.qp if isinstance(item, _Lines) else b"" for item in items]
        # The same, through DKIM's relaxed body canonicalization (ends of lines only).
        self.crlf_canonical = [canonical_lines(piece) for piece in self.crlf]
        self.qp_canonical = [canonical_lines(piece) for piece in self.qp]
        # (position, pieces, whether a value-less last line needs its own LF)
        last = len(items) - 1
        self.dynamic = tuple((index, _format(item.pieces), index == last, index == 0)
                             for index, item in enumerate(items) if isinstance(item, _Line))


def _cut(segments: Segments, number: dict[Slot, int], charset: Any, html: bool) -> _Part:
    """A part's template as runs of literal lines and lines with values."""
    items: list[_Lines | _Line] = []
    line: list[str | int] = []  # the current line with values, or literal text before one

    def literal(text: str) -> None:
        lf = charset.encode(text)
        crlf = lf.replace(b"\n", b"\r\n")
        qp = binascii.b2a_qp(lf, istext=True).replace(b"\n", b"\r\n")
        plain = (lf.isascii() and b"\0" not in lf
                 and max(map(len, lf.split(b"\n"))) <= _MAX_LINE)
        items.append(_Lines(lf, crlf, qp, plain))

    has_value = False
    for segment in segments:
        if isinstance(segment, Slot):
            line.append(number.setdefault(segment, len(number)))
            has_value = True
            continue
        if has_value:  # the line with values ends at the first LF
            head, newline, segment = segment.partition("\n")
            line.append(head + newline)
            if not newline:
                continue
            items.append(_Line(tuple(line)))
            line, has_value = [], False
        whole, newline, rest = segment.rpartition("\n")
        if newline:
            literal("".join(str(p) for p in line) + whole + newline)
            line = []
        if rest:
            line.append(rest)
    if has_value:
        items.append(_Line(tuple(line)))
    elif line:  # literal text after the last LF: the part ends with one
        literal("".join(str(p) for p in line) + "\n")
    static = sum(len(s) for s in segments if isinstance(s, str))
    slots = tuple(number[s] for s in segments if isinstance(s, Slot))
    return _Part(items, static, slots, html)


def _could_inline(segments: Segments) -> bool:
    """Whether CSS inlining might change this HTML for some recipient: a `<style` in the literal
    text, or one that a value could complete (values are escaped: they hold no `<`)."""
    for index, segment in enumerate(segments):
        if not isinstance(segment, str):
            continue
        lower = segment.lower()
        if _STYLE in lower:
            return True
        followed = index + 1 < len(segments)
        if followed and any(lower.endswith(_STYLE[:n]) for n in range(1, len(_STYLE))):
            return True
    return False


class CompiledShape:
    """The messages of one shape of one delivery; `write` is `MessageWriter.write` (and
    `Plan`'s personalization) for the templates' segments, or None for the general way."""

    def __init__(self, *, writer: MessageWriter, content: CompiledContent, parts: Parts,
                 subject: Segments, html: Segments, text: Segments):
        charset = writer.charset
        self.parts = parts
        self._charset = charset
        number: dict[Slot, int] = {}
        self._subject = _cut_subject(subject, number)
        # Every template the general way renders (the subject, the HTML and the text when the
        # content has them, whatever the parts): its literal size, its slots, escaped or not.
        rendered = [(subject, False), (html, True) if content.has_html else None,
                    (text, False) if content.has_text else None]
        self._sizes = tuple(
            (sum(len(s) for s in segments if isinstance(s, str)),
             tuple(number.setdefault(s, len(number)) for s in segments if isinstance(s, Slot)),
             escaped)
            for segments, escaped in filter(None, rendered))
        self._html = _cut(html, number, charset, True) if parts is not Parts.TEXT else None
        self._text = _cut(text, number, charset, False) if parts is not Parts.HTML else None
        self._slots = tuple(sorted(number, key=number.__getitem__))
        self._limit = content.limits.max_output_chars
        self._escape = content.has_html
        # The values cannot push any template past the limit when this bound holds.
        self._most_static = max(static for static, _slots, _html in self._sizes)
        self._most_slots = max(len(slots) for _static, slots, _html in self._sizes)
        # Subject lines and To display names met before (pure functions of their text, and
        # first names and cities repeat), at most _REMEMBERED of each.
        self._subjects: dict[str, str] = {}
        self._phrases: dict[str, tuple[str, ...]] = {}
        from_line, reply_to_line, extras = writer.shared_lines()
        self._from = from_line + "\r\n"
        self._reply_to = reply_to_line + "\r\n" if reply_to_line is not None else ""
        self._tail = "".join(line + "\r\n" for line in extras) + "MIME-Version: 1.0\r\n"
        self._part_headers = {
            (subtype, cte): _part_headers(subtype, charset, cte).encode("ascii")
            for subtype in ("plain", "html") for cte in ("7bit", "quoted-printable", "base64")}
        self._canonical_headers = {key: canonical_lines(value)
                                   for key, value in self._part_headers.items()}
        self._date: tuple[datetime, str] | None = None

    def shared_ascii(self) -> bool:
        return (self._from + self._reply_to + self._tail).isascii()

    def write(self, *, recipient: Recipient, links: dict[str, str], to_name: str,
              to_address: str, message_id: str, date: datetime,
              headers: tuple[tuple[str, str], ...], mirror: bool,
              body_hash: bool = False) -> Written | None:
        """The message (with the HTML part's decoded bytes when `mirror` and the HTML is not
        empty, and DKIM's bh= of its body when `body_hash`), or None: this message goes the
        general way."""
        values = self._values(recipient, links)
        if values is None:
            return None
        try:
            return self._write(values, to_name, to_address, message_id, date, headers, mirror,
                               [] if body_hash else None)
        except (UnicodeEncodeError, EncodingError):
            return None

    def _values(self, recipient: Recipient, links: dict[str, str]) -> list[str] | None:
        values: list[str] = []
        fields = recipient.fields
        for namespace, name in self._slots:
            if not namespace:
                value: Any = links.get(name)
            elif name in _RECIPIENT_ATTRIBUTES:
                value = getattr(recipient, name)
            elif name == "email_format":
                value = str(recipient.email_format)
            else:
                value = fields.get(name)
            if type(value) is not str:
                return None  # missing (the general way raises its error) or not a string
            values.append(value)
        return values

    def _write(self, values: list[str], to_name: str, to_address: str, message_id: str,
               date: datetime, headers: tuple[tuple[str, str], ...], mirror: bool,
               canonical: list[bytes] | None) -> Written | None:
        escaped = [str(escape(value)) for value in values] if self._escape else values
        if self._most_static + self._most_slots * sum(map(len, escaped)) > self._limit:
            for static, slots, html_values in self._sizes:
                chosen = escaped if html_values else values
                if static + sum([len(chosen[n]) for n in slots]) > self._limit:
                    return None  # past the template output limit: the general way raises
        subject = self._subject.format(*values)
        charset = self._charset
        subject_line = self._subjects.get(subject)
        if subject_line is None:
            subject_line = unstructured_header("Subject", subject, charset)
            if len(self._subjects) < _REMEMBERED:
                self._subjects[subject] = subject_line
        phrase = self._phrases.get(to_name)
        if phrase is None:
            phrase = phrase_lines("To", to_name, charset)
            if len(self._phrases) < _REMEMBERED:
                self._phrases[to_name] = phrase
        lines = [self._date_line(date), self._from, place_address("To", phrase, to_address),
                 "\r\n", self._reply_to, subject_line, "\r\n",
                 "Message-ID: ", message_id, "\r\n"]
        for name, value in headers:
            lines += (unstructured_header(name, value, charset), "\r\n")
        lines.append(self._tail)
        pieces: list[bytes] = []  # the body, in pieces that each end with CRLF
        if self.parts is Parts.MULTIPART:
            assert self._text is not None and self._html is not None
            boundary = ("=_pr_" + hashlib.sha256(message_id.encode()).hexdigest()[:32])
            lines.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"'
                         "\r\n\r\n")
            # The delimiters and the CRLF around them hold no space or tab: DKIM's relaxed
            # body canonicalization leaves them as they are.
            delimiter = f"--{boundary}\r\n".encode("ascii")
            text: list[bytes] = []
            text_canonical: list[bytes] | None = None if canonical is None else []
            text_cte, _none = self._body(self._text, values, False, text, text_canonical)
            html: list[bytes] = []
            html_canonical: list[bytes] | None = None if canonical is None else []
            html_cte, html_decoded = self._body(self._html, escaped, mirror, html,
                                                html_canonical)
            end = f"--{boundary}--\r\n".encode("ascii")
            pieces = [delimiter, self._part_headers["plain", text_cte], b"\r\n", *text,
                      b"\r\n", delimiter, self._part_headers["html", html_cte], b"\r\n", *html,
                      b"\r\n", end]
            if canonical is not None:
                assert text_canonical is not None and html_canonical is not None
                canonical += (delimiter, self._canonical_headers["plain", text_cte], b"\r\n",
                              *text_canonical, b"\r\n", delimiter,
                              self._canonical_headers["html", html_cte], b"\r\n",
                              *html_canonical, b"\r\n", end)
        else:
            part = self._html if self.parts is Parts.HTML else self._text
            assert part is not None
            cte, html_decoded = self._body(part, escaped if part.html else values,
                                           mirror and part.html, pieces, canonical)
            subtype = "html" if part.html else "plain"
            lines += (self._part_headers[subtype, cte].decode("ascii"), "\r\n")
        head = "".join(lines).encode("ascii")
        bh = None if canonical is None else body_hash(canonical)
        return Written(head + b"".join(pieces), html_decoded, len(head), bh)

    def _date_line(self, date: datetime) -> str:
        cached = self._date
        if cached is None or cached[0] != date or cached[0].tzinfo is not date.tzinfo:
            cached = self._date = (date, f"Date: {format_datetime(date)}\r\n")
        return cached[1]

    def _body(self, part: _Part, values: list[str], want_decoded: bool, out: list[bytes],
              canonical: list[bytes] | None) -> tuple[str, bytes | None]:
        """Append the part's body to `out` (pieces that end with CRLF): `mime._body`'s bytes;
        and, unless `canonical` is None, the pieces' DKIM canonical form to it.
        (transfer encoding, decoded bytes if wanted and the part is not empty)."""
        encode = self._charset.encode
        plain = part.static_plain
        gaps: list[tuple[int, bytes]] = []
        for position, line, last, first in part.dynamic:
            text = line.format(*values)
            if "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            data = encode(text)
            if last and not data.endswith(b"\n") and (data or first):
                data += b"\n"  # the part ends with a line feed (after the others' LF)
            if plain:  # (no line is longer than the whole, LF included)
                plain = (data.isascii() and b"\0" not in data
                         and (len(data) <= _MAX_LINE + 1
                              or max(map(len, data.split(b"\n"))) <= _MAX_LINE))
            gaps.append((position, data))
        crlf = part.crlf.copy()
        for position, data in gaps:
            crlf[position] = data.replace(b"\n", b"\r\n")
        empty = not want_decoded or part.static_chars + sum(
            [len(values[n]) for n in part.slots]) == 0
        if plain:
            out += crlf
            if canonical is not None:
                canonical += part.crlf_canonical
                for position, _data in gaps:
                    canonical[position - len(crlf)] = canonical_lines(crlf[position])
            return "7bit", None if empty else b"".join(crlf)
        qp = part.qp.copy()
        raw_size = part.static_raw
        for position, data in gaps:
            qp[position] = binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")
            raw_size += len(crlf[position])
        b64_length = 4 * -(-raw_size // 3) + 2 * -(-raw_size // 57)
        if sum(map(len, qp)) <= b64_length:
            out += qp
            if canonical is not None:
                canonical += part.qp_canonical
                for position, _data in gaps:
                    canonical[position - len(qp)] = canonical_lines(qp[position])
            return "quoted-printable", None if empty else b"".join(crlf)
        raw = b"".join(crlf)
        encoded = base64.encodebytes(raw).replace(b"\n", b"\r\n")
        out.append(encoded)
        if canonical is not None:
            canonical.append(canonical_lines(encoded))
        return "base64", None if empty else raw


def _cut_subject(segments: Segments, number: dict[Slot, int]) -> str:
    return _format(tuple(s if isinstance(s, str) else number.setdefault(s, len(number))
                         for s in segments))


def _format(pieces: tuple[str | int, ...]) -> str:
    """A `str.format` string that puts value n in place of slot number n: `format(*values)`
    gives the literal text and each value as is (`format(value, "")` of a `str` is itself)."""
    return "".join(p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else f"{{{p}}}"
                   for p in pieces)


def compile_shape(*, writer: MessageWriter, content: CompiledContent, parts: Parts,
                  utf8_headers: bool, inline_css: bool,
                  mirror: bool) -> CompiledShape | str:
    """The compiled shape, or why the general writer writes it (a sentence)."""
    charset = writer.charset
    if utf8_headers:
        return "the recipient's address needs SMTPUTF8 (raw UTF-8 headers)"
    if not charset.stateless:
        return f"the charset {charset.mime} is stateful"
    subject, html, text = content.segments
    # Every template the general way renders must be one the compiled path renders too: a
    # template it cannot render might fail, and the message with it.
    for name, segments, rendered in (("subject", subject, True),
                                     ("html", html, content.has_html),
                                     ("text", text, content.has_text)):
        if rendered and segments is None:
            return f"the {name} template does more than print recipient fields and links"
        if segments is not None and any(isinstance(s, str) and "\r" in s for s in segments):
            return f"the {name} template has a carriage return in its literal text"
    assert subject is not None
    if parts is not Parts.HTML and not (text is not None and content.has_text and any(
            isinstance(s, str) and s.strip() for s in text)):
        return "the text part may come out blank, and is then made from the HTML"
    if content.has_html and inline_css and html is not None and _could_inline(html):
        return "CSS inlining may change the HTML"
    if parts is Parts.TEXT and mirror:
        return "the mirror page of a text-only message is made from the HTML"
    try:
        shape = CompiledShape(writer=writer, content=content, parts=parts, subject=subject,
                              html=html or (), text=text or ())
    except (UnicodeEncodeError, EncodingError):
        return "a shared header or literal text does not encode in the charset"
    if not shape.shared_ascii():
        return "a shared header needs raw UTF-8"
    return shape
