"""bounces.normalize: one key per kind of failure text, whoever and whenever it was about."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.bounces import normalize_text
from postroom.bounces.normalize import MAX_NORMALIZED, PLACEHOLDER


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("550 5.1.1 <ann@example.org>... User Unknown", "550 5.1.1 <*>... user unknown"),
        ("host mx.example.jp [192.0.2.20]: 550 5.7.0 Please use the smtp server of your ISP.",
         "host #xxx#: 550 5.7.0 please use the smtp server of your isp."),
        ("Message expired: unable to deliver in 840 minutes.<421 4.4.2 Connection timed out>",
         "message expired: unable to deliver in #xxx# minutes.<421 4.4.2 connection timed out>"),
        ("Your mail sent on: Thu, 29 Apr 2013 23:45:22 +0900 could not be delivered",
         "your mail sent on: #xxx# could not be delivered"),
        ("queued at 2024-06-24T08:58:06.389Z as 3B3AC7B43A8A",
         "queued at #xxx# as #xxx#"),
        ("connect to [2001:db8::25]:25: Connection refused",
         "connect to #xxx# connection refused"),
        ("  Mailbox\n\tFULL   ", "mailbox full"),
        ("", ""),
    ],
)
def test_examples(text: str, normalized: str) -> None:
    assert normalize_text(text) == normalized


@pytest.mark.parametrize(
    "variants",
    [
        ["550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown in virtual "
         "mailbox table", "550 5.1.1 <bob.smith+news@other.example.net>: Recipient address "
         "rejected: User unknown in virtual mailbox table"],
        ["421 4.7.0 [TSS04] Messages from 192.0.2.25 temporarily deferred due to user "
         "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
         "421 4.7.0 [TSS09] Messages from 198.51.100.7 temporarily deferred due to user "
         "complaints - 4.16.56.1; see https://postmaster.yahooinc.com/error-codes"],
        ["550 5.7.509 Access denied, sending domain [A.EXAMPLE] does not pass DMARC. "
         "[TY1P286MB3121.JPNP286.PROD.OUTLOOK.COM 2024-06-24T08:58:06.389Z 08DC93087F48F48A]",
         "550 5.7.509 Access denied, sending domain [b.example] does not pass DMARC. "
         "[DB8PR06CA0025.eurprd06.prod.outlook.com 2024-07-01T10:00:00.000Z 08DC908A5B97C2F4] "
         "[DB3PEPF0000885D.eurprd02.prod.outlook.com 2024-07-01T10:00:00.010Z 08DC93D5]"],
        ["550-5.7.26 Unauthenticated email from a.example is not accepted. "
         "98e67ed59e1d1-2c2d0e28189si6418580a91.13 - gsmtp",
         "550-5.7.26 Unauthenticated email from b.example is not accepted. "
         "a1b2c3d4e5f6-0123456789abcdef.12 - gsmtp"],
        ["Delivery to kijitora@example.jp failed on Mon, 3 Mar 2025 10:15:02 +0100 (CET), "
         "queue id 4XyZ1k2Lm3z9abc", "Delivery to sabineko@example.net failed on Tue, "
         "11 Nov 2025 23:01:59 -0500 (EST), queue id 9A1B2C3D4E"],
    ],
)
def test_one_message_about_different_users_and_ids_is_one_key(variants: list[str]) -> None:
    assert len({normalize_text(text) for text in variants}) == 1


def test_codes_are_kept_so_that_different_failures_stay_apart() -> None:
    assert normalize_text("550 5.1.1 User unknown") != normalize_text("450 4.2.2 User unknown")


def test_long_texts_are_cut_on_a_word_boundary() -> None:
    text = "mailbox unavailable " * 50
    normalized = normalize_text(text)
    assert len(normalized) <= MAX_NORMALIZED
    assert normalized.endswith("unavailable")
    assert len(normalize_text("x" * 1000)) == MAX_NORMALIZED


@given(st.text(max_size=400))
def test_normalizing_is_total_and_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert len(once) <= MAX_NORMALIZED
    assert once == once.lower() or not once.isascii()
    assert "@" not in once or "*" in once or PLACEHOLDER in once or "@" in text
