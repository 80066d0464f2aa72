"""Reading recipients from CSV, row by row: pure parsing and validation, no database.

Each physical line is decoded on its own, so one line in a broken encoding is reported and the
rest goes on. The columns `email` (required), `first_name`, `last_name`, `email_format` and
`opted_out` are recognized; any other column becomes a custom field.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from email_validator import EmailNotValidError, validate_email

from postroom.domain.models import EmailFormat
from postroom.errors import InputError
from postroom.storage.sql import RecipientRow

__all__ = ["RowError", "normalize_address", "parse_csv"]

KNOWN = ("email", "first_name", "last_name", "email_format", "opted_out")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}
_MAX_NAME = 200


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def normalize_address(address: str) -> str:
    """The address, validated (syntax only, no DNS) and normalized (domain lower-cased).

    Raises InputError with the reason when the address is not usable.
    """
    try:
        result = validate_email(address.strip(), check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise InputError(str(exc)) from None
    normalized: str = result.normalized
    return normalized


def _decoded(lines: Iterable[bytes], encoding: str, bad: dict[int, str]) -> Iterator[str]:
    for number, raw in enumerate(lines, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield raw.decode(encoding)
        except UnicodeDecodeError as exc:
            bad[number] = (
                f"not valid {encoding}: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
            )
            yield "\n"  # an empty row stands in for the undecodable line


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
    bad: dict[int, str] = {}
    reader = csv.reader(_decoded(lines, encoding, bad))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError("the file is empty") from None
    except csv.Error as exc:
        raise InputError(f"line 1: {exc}") from None
    if 1 in bad:
        raise InputError(f"line 1 (header): {bad[1]}")
    columns = [name.strip().lower() for name in header]
    if "email" not in columns:
        raise InputError(f"no 'email' column in the header (columns: {', '.join(columns)})")
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise InputError(f"duplicate columns in the header: {', '.join(duplicates)}")
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield RowError(reader.line_num, f"malformed CSV: {exc}")
            continue
        line = reader.line_num
        if line in bad:
            yield RowError(line, bad.pop(line))
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
