"""bounces.parse on hostile input (issue 4, acceptance 5; issue 12): no exception ever escapes.

Malformed MIME, truncated and corrupted DSNs, huge headers, hostile numbers, wrong or unknown
charsets and random bytes all give a `ParsedBounce` whose recipients can be qualified and
normalized. These tests call the parser's steps (`_parse`), not `parse_bounce`: its last guard
turns any exception into a valid result, so a test through it could not fail. The guard is
tested apart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.bounces import (
    BouncedRecipient,
    BounceKind,
    ParsedBounce,
    default_rules,
    normalize_text,
    parse_bounce,
    qualify_bounce,
)
from postroom.bounces.parse import _parse  # white box: the steps, without the last guard

SAMPLES = sorted((Path(__file__).parents[2] / "corpus" / "samples").glob("*.eml"))
SEEDS = [path.read_bytes() for path in SAMPLES]
RULES = default_rules()
HOSTILE = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CONTENT_TYPES = [
    "multipart/report; report-type=delivery-status; boundary=\"B\"",
    "multipart/report; report-type=feedback-report; boundary=B",
    "multipart/report; boundary=", "multipart/mixed", "multipart/alternative; boundary=\"\"",
    "message/delivery-status", "message/feedback-report", "message/rfc822",
    "text/rfc822-headers", "text/plain; charset=utf-8", "text/plain; charset=iso-2022-jp",
    "text/plain; charset=x-unknown-charset", "text/plain; charset=\"\"", "text/html",
    "application/octet-stream", "garbage", "message/delivery-status; charset=\udcff",
    "multipart/report; boundary=\"B\"; report-type=\udcfe",
]
ENCODINGS = [b"7bit", b"8bit", b"base64", b"quoted-printable", b"x-uuencode", b"nonsense", b"",
             b"\xffbase64", b"=?utf-8?q?base64?="]
FIELDS = ["Final-Recipient", "Original-Recipient", "Action", "Status", "Diagnostic-Code",
          "Remote-MTA", "Feedback-Type", "Original-Rcpt-To", "Removal-Recipient",
          "X-Failed-Recipients", "Auto-Submitted", "Message-ID", "To", "From", "Subject",
          "Content-Type", "Content-Transfer-Encoding", "MIME-Version"]

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
raw = st.binary(max_size=300)
value = st.one_of(text.map(str.encode), raw,
                  st.sampled_from([b"rfc822; ann@example.org", b"failed", b"5.1.1",
                                   b"smtp; 550 5.1.1 User unknown", b"abuse", b"<>",
                                   b"=?utf-8?b?////?=", b"=?x-bad?q?=ZZ?=", b"rfc822;",
                                   b"5.99999999999999999999.1", b"<12345678901234567890.1.x@y>",
                                   b"9" * 5000, b"-1", b"4.4.-7", b"1e999",
                                   b'{"notificationType": "Bounce", "bounce": ' + b"[" * 5000,
                                   b'{"notificationType": 1' + b"0" * 5000 + b"}"]))


@st.composite
def header(draw: st.DrawFn) -> bytes:
    name = draw(st.one_of(st.sampled_from(FIELDS),
                          st.from_regex(r"[A-Za-z-]{1,20}", fullmatch=True)))
    return name.encode() + b": " + draw(value) + draw(st.sampled_from([b"\n", b"\r\n", b"\n "]))


@st.composite
def part(draw: st.DrawFn, depth: int = 0) -> bytes:
    ctype = draw(st.sampled_from(CONTENT_TYPES))
    head = f"Content-Type: {ctype}\nContent-Transfer-Encoding: ".encode("utf-8", "surrogateescape")
    head += draw(st.sampled_from(ENCODINGS)) + b"\n"
    body = b"".join(draw(st.lists(header(), max_size=6))) + b"\n"
    if depth < 3 and ctype.startswith("multipart") and draw(st.booleans()):
        ctype = ctype.split(";")[0]
        children = draw(st.lists(part(depth + 1), max_size=3))
        body += b"".join(b"--B\n" + child for child in children)
        body += draw(st.sampled_from([b"--B--\n", b"", b"--B"]))
    else:
        body += draw(st.one_of(raw, text.map(str.encode)))
    return head + body


@st.composite
def mime_message(draw: st.DrawFn) -> bytes:
    headers = b"".join(draw(st.lists(header(), max_size=12)))
    return headers + draw(part())


@st.composite
def damaged_sample(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 5))):
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["cut", "flip", "insert", "delete"]))
        if action == "cut":
            del data[position:]
        elif action == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[position:position] = draw(st.one_of(raw, st.sampled_from(
                [b"\n--", b"\n\n", b"Content-Type: multipart/report; boundary=\n",
                 b"Final-Recipient: rfc822;", b"charset=\"x-nope\"", b"\xff\xfe\x00"])))
        else:
            del data[position:position + draw(st.integers(1, 200))]
    return bytes(data)


def check(data: bytes, parse: Callable[[bytes], ParsedBounce] = _parse) -> None:
    parsed = parse(data)
    assert isinstance(parsed, ParsedBounce)
    assert isinstance(parsed.kind, BounceKind)
    assert isinstance(parsed.subject, str) and isinstance(parsed.from_, str)
    assert all(isinstance(name, str) and isinstance(val, str)
               for name, val in parsed.original_headers)
    for recipient, verdict in qualify_bounce(RULES, parsed):
        assert isinstance(recipient, BouncedRecipient)
        assert isinstance(recipient.diagnostic, str)
        assert verdict.failure_type is not None
        normalize_text(recipient.diagnostic)


@HOSTILE
@given(st.binary(max_size=4000))
def test_random_bytes(data: bytes) -> None:
    check(data)


@HOSTILE
@given(mime_message())
def test_malformed_mime(data: bytes) -> None:
    check(data)


@HOSTILE
@given(damaged_sample())
def test_truncated_and_corrupted_reports(data: bytes) -> None:
    check(data)


@HOSTILE
@given(st.sampled_from(SEEDS), st.integers(1, 200_000), st.sampled_from(
    [b"Subject", b"X-Long", b"Received", b"To"]), st.booleans())
def test_huge_headers(seed: bytes, size: int, name: bytes, folded: bool) -> None:
    filler = (b"a\n " if folded else b"a") * (size // (3 if folded else 1))
    check(name + b": " + filler + b"\n" + seed)
    check(b"".join(b"X-H%d: v\n" % i for i in range(size // 50)) + seed)


@HOSTILE
@given(st.sampled_from(SEEDS), st.sampled_from(
    ["utf-8", "iso-2022-jp", "shift_jis", "x-unknown", "utf-7", "", "\"", "utf-16", "ebcdic"]),
    st.binary(min_size=1, max_size=400))
def test_wrong_charsets(seed: bytes, charset: str, junk: bytes) -> None:
    data = seed.replace(b"charset=us-ascii", b"charset=" + charset.encode())
    data = data.replace(b"charset=\"us-ascii\"", b"charset=" + charset.encode())
    check(data.replace(b"\n\n", b"\n\n" + junk, 2))


def test_deep_nesting_and_empty_input() -> None:
    nested = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i)
                      for i in range(2000))
    for data in (b"", b"\n", nested, b"From \n" * 10):
        check(data)


@HOSTILE
@given(st.one_of(mime_message(), damaged_sample()))
def test_no_step_needs_the_last_guard(data: bytes) -> None:
    """`parse_bounce` catches anything as a last resort; its steps should not need it."""
    check(data, _parse)


def test_the_last_guard_turns_a_bug_into_an_unknown_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import postroom.bounces.parse as parse

    def broken(data: bytes) -> ParsedBounce:
        raise RecursionError("a bug in a step")

    sample = SEEDS[0]
    assert parse_bounce(sample).kind is not BounceKind.UNKNOWN
    monkeypatch.setattr(parse, "_parse", broken)
    parsed = parse_bounce(sample)
    assert parsed.kind is BounceKind.UNKNOWN and parsed.recipients == ()


def test_hostile_json_notifications_raise_nothing() -> None:
    for body in (b'{"notificationType": "Bounce", "bounce": ' + b"[" * 100_000 + b"]" * 100_000
                 + b"}", b'{"notificationType": 1' + b"0" * 10_000 + b"}",
                 b'{"Message": "' + b"{" * 50_000 + b'notificationType"}'):
        check(b"Subject: AWS Notification Message\n\n" + body)
