"""Keys of per-domain tables (static routes, traffic shaping): exact names and `*.` wildcards.

A key is a domain name (`example.com`) or a wildcard (`*.example.com`). The wildcard matches
every name below example.com at any depth, but not example.com itself, as Postfix's
`.example.com` and TLS wildcards do not: write both keys to cover both. The most specific key
wins: the exact name, then the wildcard of its parent, then of its grandparent, and so on.

Keys and looked-up names are compared in one form: lower case, no final dot, international
names as A-labels. So `Bücher.de` in a setting matches `xn--bcher-kva.de` on the wire.
"""

from __future__ import annotations

import re
from collections.abc import Container

import idna

__all__ = ["domain_key", "match_domain", "normalize_domain"]

WILDCARD = "*."
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


def normalize_domain(name: str) -> str:
    """`name` lower-cased, without its final dot, as A-labels; ValueError if it is no domain."""
    text = name.strip().rstrip(".").lower()
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"{name!r} is not a valid domain name: {exc}") from None
    if not text or len(text) > 253 or not all(_LABEL.match(label) for label in text.split(".")):
        raise ValueError(f"{name!r} is not a valid domain name")
    return text


def domain_key(key: str) -> str:
    """A table key in its compared form: a domain name, or `*.` and a domain name."""
    key = key.strip()
    if key.startswith(WILDCARD):
        return WILDCARD + normalize_domain(key[len(WILDCARD):])
    if "*" in key:
        raise ValueError(f"{key!r}: a wildcard is written `*.example.com` (names below "
                         "example.com)")
    return normalize_domain(key)


def match_domain(keys: Container[str], domain: str) -> str | None:
    """The most specific key of `keys` that matches `domain` (normalized), or None."""
    if domain in keys:
        return domain
    labels = domain.split(".")
    for start in range(1, len(labels)):
        wildcard = WILDCARD + ".".join(labels[start:])
        if wildcard in keys:
            return wildcard
    return None
