"""Email addresses: validation and normalization (email-validator, no DNS), and their wire form.

Addresses are stored normalized (domain lower-cased, IDN domains as Unicode). On the wire, the
domain goes out as its A-label (punycode); a non-ASCII local part needs SMTPUTF8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from postroom.errors import InputError

__all__ = ["WireAddress", "allow_test_domains", "normalize_address", "split_mailbox",
           "wire_address"]

_QUOTED_PAIR = re.compile(r"\\(.)")
# email-validator's test environment: addresses in the special-use domain `test` (RFC 6761)
# are accepted. Process-wide, as email-validator's own switch is; set from the settings
# (`allow_test_domains`) by `wiring.build()` and when the settings are read (ADR 0018).
_test_environment = False


def allow_test_domains(allowed: bool) -> None:
    """Accept (or refuse again) addresses in `.test`, for test environments."""
    global _test_environment
    _test_environment = allowed


@dataclass(frozen=True, slots=True)
class WireAddress:
    address: str  # what goes in RCPT TO / MAIL FROM and in headers
    smtputf8: bool  # the local part is not ASCII: the server must offer SMTPUTF8


def _validate(address: str) -> object:
    try:
        return validate_email(address.strip(), check_deliverability=False, allow_smtputf8=True,
                              test_environment=_test_environment)
    except EmailNotValidError as exc:
        domain = address.strip().rpartition("@")[2].rstrip(".").lower()
        hint = (" (a test environment may accept .test addresses: the allow_test_domains "
                "setting)" if not _test_environment and
                (domain == "test" or domain.endswith(".test")) else "")
        raise InputError(f"{exc}{hint}") from None


def normalize_address(address: str) -> str:
    """The address, validated (syntax only, no DNS) and normalized (domain lower-cased).

    Raises InputError with the reason when the address is not usable.
    """
    normalized: str = _validate(address).normalized  # type: ignore[attr-defined]
    return normalized


def split_mailbox(value: str) -> tuple[str, str]:
    """(display name, address) of `Name <address>` or `"Name" <address>`; ("", value) for a
    bare address. Only splits: the address is validated apart, and the name is made safe when
    it is written (`header_text`), as the From name is."""
    text = value.strip()
    start = text.rfind("<")
    if start < 0 or not text.endswith(">"):
        return "", text
    name, address = text[:start].strip(), text[start + 1:-1].strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = _QUOTED_PAIR.sub(r"\1", name[1:-1])
    return name, address


def wire_address(address: str) -> WireAddress:
    """The form of a (normalized) address to put on the wire: A-label domain."""
    result = _validate(address)
    local = result.local_part  # type: ignore[attr-defined]
    ascii_domain: str = result.ascii_domain  # type: ignore[attr-defined]
    return WireAddress(f"{local}@{ascii_domain}", smtputf8=not local.isascii())
