"""delivery.audience: `field=value`, `field!=value`, `field~text` filters over recipients."""

from __future__ import annotations

import pytest

from postroom.delivery.audience import Filter, matcher, parse_filter
from postroom.domain.models import EmailFormat, Recipient
from postroom.errors import InputError

ANN = Recipient(id=1, email="ann@example.org", first_name="Ann", last_name="Lee",
                email_format=EmailFormat.HTML, fields={"tier": "gold", "points": 42})
BOB = Recipient(id=2, email="bob@Other.example", first_name="Bob", opted_out=True,
                fields={"tier": "silver"})
CID = Recipient(id=3, email="cid@example.org", first_name="Cid")
EVERYONE = (ANN, BOB, CID)


def selected(*filters: str) -> list[str]:
    keep = matcher(filters)
    return [r.first_name for r in EVERYONE if keep(r)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tier=gold", Filter("tier", "=", "gold")),
        ("  tier = gold  ", Filter("tier", "=", "gold")),
        ("tier!=gold", Filter("tier", "!=", "gold")),
        ("email~EXAMPLE.org", Filter("email", "~", "EXAMPLE.org")),
        ("note=a=b", Filter("note", "=", "a=b")),
        ("tier=", Filter("tier", "=", "")),
        ("a.b-c_d=x", Filter("a.b-c_d", "=", "x")),
    ],
)
def test_parse_filter(text: str, expected: Filter) -> None:
    assert parse_filter(text) == expected


@pytest.mark.parametrize("text", ["", "tier", "=gold", "1tier=gold", "ti er=gold", "tier>3"])
def test_parse_filter_rejects(text: str) -> None:
    with pytest.raises(InputError, match="expected FIELD=VALUE, FIELD!=VALUE or FIELD~TEXT"):
        parse_filter(text)


def test_matcher_fails_early_on_a_bad_filter() -> None:
    with pytest.raises(InputError, match="'oops'"):
        matcher(["tier=gold", "oops"])


def test_no_filter_selects_everyone() -> None:
    assert selected() == ["Ann", "Bob", "Cid"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (("tier=gold",), ["Ann"]),
        (("tier=Gold",), []),  # equality is exact
        (("tier!=gold",), ["Bob", "Cid"]),  # a missing field is the empty string
        (("tier=",), ["Cid"]),
        (("tier~IL",), ["Bob"]),  # contains, any case
        (("points=42",), ["Ann"]),
        (("email~other.EXAMPLE",), ["Bob"]),
        (("email=ann@example.org",), ["Ann"]),
        (("first_name=Cid",), ["Cid"]),
        (("last_name=Lee",), ["Ann"]),
        (("email_format=html",), ["Ann"]),
        (("email_format=unknown",), ["Bob", "Cid"]),
        (("opted_out=true",), ["Bob"]),
        (("opted_out=false",), ["Ann", "Cid"]),
        (("email~example.org", "tier!=gold"), ["Cid"]),  # every filter must hold
        (("tier=gold", "tier=silver"), []),
    ],
)
def test_matcher(filters: tuple[str, ...], expected: list[str]) -> None:
    assert selected(*filters) == expected
