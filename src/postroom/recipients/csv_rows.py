"""Reading recipients from CSV, row by row: pure parsing and validation, no database.

Each physical line is decoded on its own, so one line in a broken encoding is reported and the
rest goes on. The columns `email` (required), `first_name`, `last_name`, `email_format` and
`opted_out` are recognized; any other column becomes a custom field.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from postroom.domain.addresses import normalize_address
from postroom.domain.models import EmailFormat, RecipientRow
from postroom.errors import InputError

__all__ = ["MAX_COLUMNS", "RowError", "parse_csv"]

KNOWN = ("email", "first_name", "last_name", "email_format", "opted_out")
_UPDATABLE = frozenset(KNOWN[1:])
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}
_MAX_NAME = 200
MAX_RECORD_LINES = 100  # a quoted field may span this many lines
MAX_COLUMNS = 1000  # columns a header may have (5 known ones, the rest custom fields)


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class _Lines:
    """Physical lines for csv.reader, decoded one by one, that can be rewound to a line.

    Keeps the lines of the record being read, so that a record the csv module cannot parse
    (an unterminated quote, a quoted field that runs on for too long) is reported at its first
    line and the lines after that line are read again as records of their own.
    """

    def __init__(self, lines: Iterable[bytes], encoding: str):
        self._source = iter(lines)
        self._encoding = encoding
        self._replay: list[tuple[int, str, str | None]] = []
        self._next_number = 1
        self.record: list[tuple[int, str, str | None]] = []  # (line, text, decode error)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        entry = self._replay.pop(0) if self._replay else self._read()
        self.record.append(entry)
        if len(self.record) > MAX_RECORD_LINES:
            raise _RunawayRecord
        return entry[1]

    def _read(self) -> tuple[int, str, str | None]:
        raw = next(self._source)
        number = self._next_number
        self._next_number += 1
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            return number, raw.decode(self._encoding), None
        except UnicodeDecodeError as exc:
            reason = f"not valid {self._encoding}: byte 0x{raw[exc.start]:02x} at column " \
                     f"{exc.start + 1}"
            return number, "\n", reason  # an empty line stands in for the undecodable one

    def start_record(self) -> None:
        self.record = []

    def rewind_after_first(self) -> int:
        """Forget the current record but its first line; its other lines are read again."""
        first, rest = self.record[0], self.record[1:]
        self._replay[:0] = rest
        self.record = []
        return first[0]


class _RunawayRecord(Exception):
    """A quoted field ran on for more than MAX_RECORD_LINES lines."""


def _flag(value: str, column: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InputError(f"{column} must be true or false, got {value!r}")


def _row(values: dict[str, str]) -> RecipientRow:
    email = values.get("email", "").strip()
    if not email:
        raise InputError("email is empty")
    try:
        normalized = normalize_address(email)
    except InputError as exc:
        raise InputError(f"invalid email {email!r}: {exc}") from None
    fmt = values.get("email_format", "").strip().lower() or "unknown"
    if fmt not in {f.value for f in EmailFormat}:
        raise InputError(f"email_format must be unknown, text or html, got {fmt!r}")
    names = {k: values.get(k, "").strip() for k in ("first_name", "last_name")}
    for key, name in names.items():
        if len(name) > _MAX_NAME:
            raise InputError(f"{key} is longer than {_MAX_NAME} characters")
    fields: dict[str, Any] = {k: v for k, v in values.items() if k not in KNOWN}
    return RecipientRow(
        given=frozenset(values) & _UPDATABLE,
        email=normalized,
        first_name=names["first_name"],
        last_name=names["last_name"],
        email_format=EmailFormat(fmt),
        opted_out=_flag(values.get("opted_out", ""), "opted_out"),
        fields=fields,
    )


def parse_csv(lines: Iterable[bytes], *, encoding: str = "utf-8") -> Iterator[
    RecipientRow | RowError
]:
    """Parse CSV lines (bytes, as read from a binary file) into recipients or row errors.

    Raises InputError when the header itself is unusable (no `email` column): nothing is read.
    """
    source = _Lines(lines, encoding)
    reader = csv.reader(source, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError("the file is empty") from None
    except (csv.Error, _RunawayRecord) as exc:
        raise InputError(f"line 1 (header): malformed CSV: {exc}") from None
    if any(error for _, _, error in source.record):
        raise InputError(f"line 1 (header): {source.record[0][2]}")
    if len(header) > MAX_COLUMNS:
        raise InputError(f"line 1 (header): the header has {len(header):,} columns, more than "
                         f"{MAX_COLUMNS:,}")
    columns = [name.strip().lower() for name in header]
    if "email" not in columns:
        raise InputError(f"no 'email' column in the header (columns: {', '.join(columns)})")
    duplicates = sorted(c for c, n in Counter(columns).items() if n > 1)
    if duplicates:
        raise InputError(f"duplicate columns in the header: {', '.join(duplicates)}")
    while True:
        source.start_record()
        try:
            values = next(reader)
        except StopIteration:
            return
        except (csv.Error, _RunawayRecord) as exc:
            if not source.record:
                return
            line = source.rewind_after_first()
            reason = (f"a quoted field runs on for more than {MAX_RECORD_LINES} lines"
                      if isinstance(exc, _RunawayRecord) else str(exc))
            yield RowError(line, f"malformed CSV ({reason}); the lines after it are read again")
            reader = csv.reader(source, strict=True)
            continue
        line = source.record[0][0]
        broken = [(number, error) for number, _, error in source.record if error]
        if broken:
            number, error = broken[0]
            where = "" if number == line else f"line {number} of this record is "
            yield RowError(line, where + error)
            continue
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(columns):
            yield RowError(line, f"{len(values)} fields where the header has {len(columns)}")
            continue
        try:
            yield _row(dict(zip(columns, values, strict=True)))
        except InputError as exc:
            yield RowError(line, str(exc))
