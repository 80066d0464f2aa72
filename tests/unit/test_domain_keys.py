"""domain_keys: one form for domain names, exact keys before the nearest `*.` wildcard."""

from __future__ import annotations

import pytest

from postroom.domain.domain_keys import domain_key, match_domain, normalize_domain


@pytest.mark.parametrize(("name", "expected"), [
    ("Example.COM", "example.com"),
    (" example.com. ", "example.com"),
    ("Bücher.de", "xn--bcher-kva.de"),
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("127.0.0.1", "127.0.0.1"),
    ("localhost", "localhost"),
])
def test_normalize_domain(name: str, expected: str) -> None:
    assert normalize_domain(name) == expected


@pytest.mark.parametrize("name", ["", ".", "a..b", "-a.com", "a-.com", "a b.com", "a@b.com",
                                  "x" * 64 + ".com", "*.example.com"])
def test_normalize_domain_refuses(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid domain"):
        normalize_domain(name)


def test_keys_are_names_or_wildcards() -> None:
    assert domain_key("*.Example.com") == "*.example.com"
    assert domain_key("EXAMPLE.com.") == "example.com"
    for bad in ("*", "*example.com", "a.*.com", "**.example.com"):
        with pytest.raises(ValueError):
            domain_key(bad)


def test_the_most_specific_key_wins() -> None:
    keys = {"example.com", "*.example.com", "*.mail.example.com", "*.org"}
    assert match_domain(keys, "example.com") == "example.com"
    assert match_domain(keys, "eu.example.com") == "*.example.com"
    assert match_domain(keys, "a.b.c.example.com") == "*.example.com"
    assert match_domain(keys, "x.mail.example.com") == "*.mail.example.com"
    assert match_domain(keys, "mail.example.com") == "*.example.com"
    assert match_domain(keys, "example.org") == "*.org"
    assert match_domain(keys, "example.net") is None


def test_a_wildcard_does_not_match_its_own_domain() -> None:
    assert match_domain({"*.example.com"}, "example.com") is None
    assert match_domain({"*.example.com"}, "notexample.com") is None
