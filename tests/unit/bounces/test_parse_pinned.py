"""bounces.parse: behaviour the mutation run of issue 15 (ADR 0028) found unpinned — the
human text of a DSN without Diagnostic-Code, fields shared by recipients of one block, the
auto-reply guard of non-standard bounces, an unannounced returned copy, and the boundary cap."""

from __future__ import annotations

from postroom.bounces import BounceKind, parse_bounce
from postroom.bounces.parse import MAX_BOUNDARIES
from tests.unit.bounces.test_parse import ORIGINAL, dsn


def test_a_dsn_without_diagnostic_code_takes_each_recipient_lines_of_the_human_text() -> None:
    human = ("This is the mail system at host mx.example.org.\n\n"
             "<ann@example.org>: host mx1.example.org said: 550 sorry, nobody by that name\n"
             "    (in reply to RCPT TO command)\n\n"
             "<bob@example.org>: host mx1.example.org said: 552 over the storage allowance\n"
             "    (in reply to end of DATA command)\n")
    parsed = parse_bounce(dsn("Final-Recipient: rfc822; ann@example.org\nAction: failed\n"
                              "Status: 5.0.0\n\n"
                              "Final-Recipient: rfc822; bob@example.org\nAction: failed\n"
                              "Status: 5.0.0\n", human))
    ann, bob = parsed.recipients
    assert "nobody by that name" in ann.diagnostic
    assert "storage allowance" not in ann.diagnostic
    assert "storage allowance" in bob.diagnostic
    assert "nobody by that name" not in bob.diagnostic


def test_fields_before_the_first_recipient_of_a_block_are_not_the_second_one() -> None:
    parsed = parse_bounce(dsn("Action: failed\n"
                              "Final-Recipient: rfc822; ann@example.org\nStatus: 5.1.1\n"
                              "Final-Recipient: rfc822; bob@example.org\nStatus: 4.2.2\n"))
    assert [(r.recipient, r.action, r.status) for r in parsed.recipients] == [
        ("ann@example.org", "failed", "5.1.1"), ("bob@example.org", None, "4.2.2")]


_BOUNCE_TEXT = ("I'm afraid I wasn't able to deliver your message to ann@example.org.\n"
                "550 5.1.1 <ann@example.org>: unknown user\n")


def test_a_failed_recipients_header_keeps_a_weak_auto_reply_a_bounce() -> None:
    # Auto-Submitted alone is weak (bounces carry it too); X-Failed-Recipients says a mail
    # system wrote this, even from an ordinary sender with an ordinary subject.
    data = ("From: Ann <ann@example.org>\nSubject: About your message\n"
            "Auto-Submitted: auto-replied\nX-Failed-Recipients: ann@example.org\n\n"
            + _BOUNCE_TEXT)
    parsed = parse_bounce(data.encode())
    assert parsed.kind is BounceKind.HEURISTIC
    assert [r.recipient for r in parsed.recipients] == ["ann@example.org"]


def test_a_mailer_daemon_in_capitals_keeps_a_strong_auto_reply_a_bounce() -> None:
    data = ("From: MAILER-DAEMON@MX.EXAMPLE.ORG\nSubject: Re: news\nX-Autoreply: yes\n\n"
            + _BOUNCE_TEXT)
    parsed = parse_bounce(data.encode())
    assert parsed.kind is BounceKind.HEURISTIC
    assert [r.recipient for r in parsed.recipients] == ["ann@example.org"]


def test_an_unannounced_returned_copy_is_the_original() -> None:
    # no "original message follows" line: three header fields, one of them Message-ID
    data = ("From: MAILER-DAEMON@mx.example.org\nSubject: Undelivered mail\n\n"
            + _BOUNCE_TEXT + "\n" + ORIGINAL)
    parsed = parse_bounce(data.encode())
    assert parsed.original_message_id == "<d1.l2.20250301@sender.example>"
    assert "Hello." not in parsed.recipients[0].diagnostic


def _with_boundaries(count: int) -> bytes:
    filler = "".join(f"x-note: boundary=\"b{n}\"\n" for n in range(count))
    return ("From: MAILER-DAEMON@mx.example.org\nSubject: Undelivered mail\n"
            "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"B\"\n\n"
            f"{filler}--B\nContent-Type: text/plain\n\n{_BOUNCE_TEXT}--B--\n").encode()


def test_past_the_boundary_cap_a_message_is_read_as_headers_and_plain_text() -> None:
    # one boundary= in the headers, the rest in the preamble
    at_cap = parse_bounce(_with_boundaries(MAX_BOUNDARIES - 1))
    assert at_cap.kind is BounceKind.HEURISTIC
    assert "--B--" not in at_cap.recipients[0].diagnostic  # the text part, parsed as MIME
    over = parse_bounce(_with_boundaries(MAX_BOUNDARIES))
    assert over.kind is BounceKind.HEURISTIC  # still read, from the raw body
    assert [r.recipient for r in over.recipients] == ["ann@example.org"]
    assert "--B--" in over.recipients[0].diagnostic  # the body as plain text, delimiters too
