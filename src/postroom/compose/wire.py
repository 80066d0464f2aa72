"""The wire form of a recipient's address, without validating a plain address once more.

`domain.addresses.wire_address` runs email-validator (tens of µs) and gives the address with
its domain as A-labels. Recipients were validated and normalized at import, and most addresses
are plain: an ASCII dot-atom local part and a lower-case letters-digits-hyphens domain. For
exactly those, email-validator's result is known without running it:

- the local part matches its dot-atom rule (`DOT_ATOM_TEXT`) and comes back unchanged; it is
  not one of the RFC 2142 names it lower-cases, and at most 64 characters (its strict limit);
- the domain is already what UTS-46 mapping and IDNA encoding give back (lower-case LDH
  labels, no `--` so no R-LDH or Punycode label), has a period, a top-level label that ends
  with a letter, labels of at most 63 and a total of at most 253 characters, and is not a
  special-use name; the address is at most 254 characters;

so `wire_address(address) == WireAddress(address, smtputf8=False)`. Anything else (IDN,
Unicode local part, upper case, quoting, special-use or odd names) takes the full path.
"""

from __future__ import annotations

import re

import email_validator
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from postroom.domain.addresses import WireAddress, wire_address

__all__ = ["recipient_wire_address"]

_ATEXT = r"A-Za-z0-9_!#$%&'*+\-/=?^`{|}~"  # email-validator's ATEXT (RFC 5322 §3.2.3)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TOP_LABEL = r"(?:[a-z0-9][a-z0-9-]{0,61})?[a-z]"
_PLAIN = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@(?:{_LABEL}\.)+{_TOP_LABEL}")
_CASE_INSENSITIVE = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


def _plain(address: str) -> bool:
    if len(address) > 254 or _PLAIN.fullmatch(address) is None:
        return False
    local, _, domain = address.partition("@")
    if len(local) > 64 or len(domain) > 253 or "--" in domain:
        return False
    if local.lower() in _CASE_INSENSITIVE:
        return False
    # Read at each call: email-validator lets applications change this list.
    return not any(domain == name or domain.endswith("." + name)
                   for name in email_validator.SPECIAL_USE_DOMAIN_NAMES)


def recipient_wire_address(address: str) -> WireAddress:
    """`wire_address(address)`, cheaply when the address is plain (see the module docstring)."""
    if _plain(address):
        return WireAddress(address, smtputf8=False)
    return wire_address(address)
