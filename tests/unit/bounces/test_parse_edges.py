"""bounces.parse, field by field: every value a step returns is pinned whole (kind, recipients
with status, action and diagnostic, feedback type), for the provider formats, the sender's own
addresses a bounce quotes, and the last-resort guards."""

from __future__ import annotations

import json

import pytest

from postroom.bounces import BouncedRecipient, BounceKind, ParsedBounce, parse_bounce
from postroom.bounces import parse as parse_module
from tests.unit.bounces.test_parse import ORIGINAL, dsn


def ses(message: dict[str, object], *, wrapped: bool = True) -> ParsedBounce:
    body = json.dumps({"Type": "Notification", "Message": json.dumps(message)}) if wrapped \
        else json.dumps(message, indent=1)
    return parse_bounce(("From: no-reply@sns.amazonaws.com\nTo: ops@sender.example\n"
                         "Subject: AWS Notification Message\n\nNotification follows\n"
                         + body + "\n-- \nSNS\n").encode())


def test_ses_bounce_fields() -> None:
    parsed = ses({"notificationType": "Bounce", "bounce": {
        "bounceType": "Permanent", "bounceSubType": "General", "bouncedRecipients": [
            {"emailAddress": "hal@example.org", "action": "Failed", "status": "5.1.1",
             "diagnosticCode": "smtp; 550 5.1.1 user unknown"},
            {"emailAddress": "ida@example.org"},
            {"emailAddress": "jan@example.org", "action": "Delayed", "status": "4.4.1"},
            {"status": "5.0.0"},
            "not an object"]}})
    assert parsed.kind is BounceKind.DSN
    assert parsed.recipients == (
        BouncedRecipient("hal@example.org", "5.1.1", "failed", "550 5.1.1 user unknown", None),
        BouncedRecipient("ida@example.org", None, "failed", "General", None),
        BouncedRecipient("jan@example.org", "4.4.1", "delayed", "General", None),
        BouncedRecipient(None, "5.0.0", "failed", "General", None),
    )


def test_ses_transient_bounce_without_recipients_is_a_delay() -> None:
    for bounce_type, kind in (("Transient", BounceKind.DELAY), ("transient", BounceKind.DELAY),
                              ("Permanent", BounceKind.DSN), (None, BounceKind.DSN)):
        detail: dict[str, object] = {"bouncedRecipients": []}
        if bounce_type is not None:
            detail["bounceType"] = bounce_type
        parsed = ses({"notificationType": "Bounce", "bounce": detail})
        assert (parsed.kind, parsed.recipients) == (kind, ()), bounce_type
    with_recipient = ses({"notificationType": "Bounce", "bounce": {
        "bounceType": "Transient", "bouncedRecipients": [{"emailAddress": "a@example.org"}]}})
    assert with_recipient.kind is BounceKind.DSN
    assert with_recipient.recipients == (
        BouncedRecipient("a@example.org", None, "failed", "", None),)


def test_ses_complaint_fields() -> None:
    parsed = ses({"notificationType": "Complaint", "complaint": {
        "complaintFeedbackType": "Not-Spam", "complainedRecipients": [
            {"emailAddress": "ivy@example.org"}, {}, 7]}})
    assert (parsed.kind, parsed.feedback_type) == (BounceKind.ARF, "not-spam")
    assert parsed.recipients == (
        BouncedRecipient("ivy@example.org", None, None, "feedback-type: abuse", None),
        BouncedRecipient(None, None, None, "feedback-type: abuse", None),
    )
    plain = ses({"notificationType": "complaint", "complaint": {
        "complainedRecipients": [{"emailAddress": "jo@example.org"}]}}, wrapped=False)
    assert (plain.kind, plain.feedback_type) == (BounceKind.ARF, "abuse")
    assert plain.recipients == (
        BouncedRecipient("jo@example.org", None, None, "feedback-type: abuse", None),)
    assert ses({"notificationType": "Complaint", "complaint": {}}).recipients == ()


def test_ses_delivery_fields() -> None:
    parsed = ses({"notificationType": "Delivery", "delivery": {
        "recipients": ["joe@example.org", 3], "smtpResponse": "250 2.6.0 Message received"}})
    assert parsed.kind is BounceKind.SUCCESS
    assert parsed.recipients == (BouncedRecipient(
        "joe@example.org", "2.6.0", "delivered", "250 2.6.0 Message received", None),)
    quiet = ses({"notificationType": "Delivery", "delivery": {"recipients": ["joe@example.org"]}})
    assert quiet.recipients == (BouncedRecipient("joe@example.org", None, "delivered", "", None),)


@pytest.mark.parametrize("message", [
    {"notificationType": "Bounce"},  # no detail object
    {"notificationType": "Bounce", "bounce": "text"},
    {"notificationType": "Received", "received": {}},  # a type Postroom does not read
    {"notificationType": "AmazonSnsSubscriptionSucceeded"},
])
def test_ses_notifications_without_a_usable_detail_are_not_reports(
        message: dict[str, object]) -> None:
    assert ses(message).kind is not BounceKind.ARF
    assert ses(message).kind not in (BounceKind.DSN, BounceKind.SUCCESS, BounceKind.DELAY)


def test_ses_body_that_is_not_json_or_not_an_object() -> None:
    broken = parse_bounce(b"From: no-reply@sns.amazonaws.com\nSubject: AWS Notification\n\n"
                          b'{"notificationType": "Bounce", oops}\n')
    assert broken.kind is BounceKind.UNKNOWN
    listed = parse_bounce(b"From: no-reply@sns.amazonaws.com\nSubject: AWS Notification\n\n"
                          b'{"Message": "[\\"notificationType\\"]"}\n')
    assert listed.kind is BounceKind.UNKNOWN


def test_provider_feedback_recipients_are_pinned_whole() -> None:
    jmrp = parse_bounce((
        "From: staff@hotmail.com\nTo: fbl@sender.example\nSubject: complaint\nMIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"J\"\n\n--J\nContent-Type: message/rfc822\n\n"
        "X-HmXmrOriginalRecipient: <frank@hotmail.example>\n" + ORIGINAL + "\n--J--\n").encode())
    assert jmrp.recipients == (
        BouncedRecipient("frank@hotmail.example", None, None, "feedback-type: abuse", None),)
    apple = parse_bounce(b"From: gina@icloud.example, hank@icloud.example\nSubject: unsubscribe\n"
                         b"X-Apple-Unsubscribe: TRUE\n\nunsubscribe\n")
    assert (apple.kind, apple.feedback_type) == (BounceKind.ARF, "unsubscribe")
    assert apple.recipients == (
        BouncedRecipient("gina@icloud.example", None, None, "feedback-type: unsubscribe", None),)
    nameless = parse_bounce(b"From: Apple\nSubject: unsubscribe\nX-Apple-Unsubscribe: true\n\nx\n")
    assert nameless.recipients == (
        BouncedRecipient(None, None, None, "feedback-type: unsubscribe", None),)
    assert parse_bounce(b"From: gina@icloud.example\nSubject: hi\nX-Apple-Unsubscribe: false\n"
                        b"\nhello\n").kind is BounceKind.UNKNOWN


def test_arf_without_a_feedback_type_or_a_recipient() -> None:
    report = (
        "From: fbl@isp.example\nTo: fbl@sender.example\nSubject: report\nMIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=feedback-report; boundary=\"F\"\n\n"
        "--F\nContent-Type: text/plain\n\nA complaint.\n"
        "--F\nContent-Type: message/feedback-report\n\nUser-Agent: fbl/1.0\nVersion: 1\n\n"
        "--F\nContent-Type: message/rfc822\n\nFrom: news@sender.example\n"
        "To: ann@example.org, bob@example.org\nSubject: x\n\nx\n--F--\n")
    parsed = parse_bounce(report.encode())
    assert (parsed.kind, parsed.feedback_type) == (BounceKind.ARF, None)
    assert parsed.recipients == (
        BouncedRecipient("ann@example.org", None, None, "feedback-type: None", None),)
    headless = report.replace("To: ann@example.org, bob@example.org\n", "")
    assert parse_bounce(headless.encode()).recipients == (
        BouncedRecipient(None, None, None, "feedback-type: None", None),)


def test_the_sender_own_addresses_are_never_the_recipient() -> None:
    """A bounce quotes the sender's From, Sender, Reply-To and Return-Path and its own To."""
    original = ("From: News <news@sender.example>\nSender: relay@sender.example\n"
                "Reply-To: help@sender.example\nReturn-Path: <rp@sender.example>\n"
                "To: ann@example.org\nSubject: News\nMessage-ID: <m1@sender.example>\n")
    quoted = "".join(f"<{a}>: see above\n" for a in (
        "news@sender.example", "relay@sender.example", "help@sender.example",
        "rp@sender.example", "owner@sender.example"))
    data = ("From: MAILER-DAEMON@mx.example.org\nTo: owner@sender.example\n"
            "Subject: Undelivered Mail Returned to Sender\n\n"
            "The mail system could not deliver your message.\n\n" + quoted +
            "<ann@example.org>: host mx.example.org said: 550 5.1.1 User unknown\n\n"
            "--- Below this line is a copy of the message.\n\n" + original)
    parsed = parse_bounce(data.encode())
    assert [r.recipient for r in parsed.recipients] == ["ann@example.org"]
    assert parsed.original_message_id == "<m1@sender.example>"


def test_failed_recipients_header_lists_several_addresses() -> None:
    data = ("From: Mail Delivery System <Mailer-Daemon@mx.example.org>\n"
            "X-Failed-Recipients: ann@example.org, bob@example.org;not-an-address\n"
            "Subject: Mail delivery failed\n\nSomething went wrong.\n")
    parsed = parse_bounce(data.encode())
    assert parsed.kind is BounceKind.HEURISTIC
    assert [r.recipient for r in parsed.recipients] == ["ann@example.org", "bob@example.org"]


def test_a_failed_recipients_header_makes_an_auto_reply_a_bounce() -> None:
    data = ("From: Kim <kim@example.org>\nSubject: Out of office\nX-Autoreply: yes\n"
            "X-Failed-Recipients: ann@example.org\n\nDelivery to ann@example.org failed.\n")
    assert parse_bounce(data.encode()).kind is BounceKind.HEURISTIC
    vacation = ("From: Kim <kim@example.org>\nSubject: Out of office\nX-Autoreply: yes\n\n"
                "I am away. Your mail could not be delivered to me until Monday.\n")
    assert parse_bounce(vacation.encode()).kind is BounceKind.AUTOREPLY
    postmaster = ("From: postmaster@example.org\nSubject: Out of office\nX-Autoreply: yes\n\n"
                  "Delivery to the following recipient failed permanently:\n\n"
                  "    ann@example.org\n")
    assert parse_bounce(postmaster.encode()).kind is BounceKind.HEURISTIC
    weak = ("From: Kim <kim@example.org>\nSubject: Re: News\nAuto-Submitted: auto-replied\n\n"
            "Your message could not be delivered to me, I am away.\n")
    assert parse_bounce(weak.encode()).kind is BounceKind.AUTOREPLY


def test_heuristic_bounce_falls_back_to_the_returned_to() -> None:
    data = ("From: MAILER-DAEMON@mx.example.org\nSubject: Returned mail\n\n"
            "Delivery failed: no reason given.\n\n"
            "----- Original message -----\n\n" + ORIGINAL)
    parsed = parse_bounce(data.encode())
    assert [r.recipient for r in parsed.recipients] == ["ann@example.org"]


def test_auto_reply_recipient_and_text() -> None:
    parsed = parse_bounce(b"From: kim@example.org, lee@example.org\nSubject: Out of Office\n\n"
                          + b"Away. " * 500 + b"\n")
    assert [r.recipient for r in parsed.recipients] == ["kim@example.org"]
    assert len(parsed.recipients[0].diagnostic) == 2000
    assert parsed.recipients[0].diagnostic.startswith("Away. Away.")
    nameless = parse_bounce(b"From: Kim\nSubject: Out of Office\nIn-Reply-To: junk\n\nAway.\n")
    assert nameless.recipients == (BouncedRecipient(None, None, None, "Away.", None),)
    assert nameless.original_message_id is None


def test_dsn_field_defaults() -> None:
    parsed = parse_bounce(dsn("Final-Recipient: rfc822; ann@example.org\n"
                              "Diagnostic-Code: smtp; 550 5.1.1 no such user\n"))
    assert parsed.kind is BounceKind.DSN
    assert parsed.recipients == (
        BouncedRecipient("ann@example.org", "5.1.1", None, "550 5.1.1 no such user", None),)
    actual = parse_bounce(dsn("Original-Recipient: rfc822; nobody\n"
                              "X-Actual-Recipient: rfc822; ann@example.org\nAction: failed\n"
                              "Status: 5.1.1\n"))
    assert actual.kind is BounceKind.DSN
    assert [(r.recipient, r.status) for r in actual.recipients] == [("ann@example.org",
                                                                      "5.1.1")]
    forwarded = parse_bounce(dsn('Final-Recipient: rfc822; "Ann"@example.org\n'
                                 "Original-Recipient: rfc822; ANN@example.org\n"
                                 "Action: failed\nStatus: 5.1.1\n"))
    assert [r.recipient for r in forwarded.recipients] == ['"Ann"@example.org']


def test_dsn_groups_without_a_recipient_are_skipped_not_the_end() -> None:
    parsed = parse_bounce(dsn("Final-Recipient: rfc822; nobody\nAction: failed\n\n"
                              "Final-Recipient: rfc822; ann@example.org\nAction: failed\n"
                              "Status: 5.1.1\n"))
    assert parsed.kind is BounceKind.DSN
    assert [(r.recipient, r.status) for r in parsed.recipients] == [("ann@example.org",
                                                                      "5.1.1")]


def test_dsn_original_recipient_starts_a_group() -> None:
    parsed = parse_bounce(dsn("Original-Recipient: rfc822; ann@example.org\nAction: failed\n"
                              "Status: 5.1.1\nOriginal-Recipient: rfc822; bob@example.org\n"
                              "Action: delayed\nStatus: 4.4.1\n"))
    assert [(r.recipient, r.action) for r in parsed.recipients] == [
        ("ann@example.org", "failed"), ("bob@example.org", "delayed")]


def test_a_report_without_recipients_is_read_by_its_wording() -> None:
    data = dsn("Reporting-MTA: dns; mx.example.org\n",
               human="Delivery to the following recipient failed permanently:\n\n"
                     "    ann@example.org\n")
    data = data.replace(b"Subject: Undelivered Mail Returned to Sender", b"Subject: Hello")
    data = data.replace(b"MAILER-DAEMON@mx.example.org (Mail Delivery System)",
                        b"friend@example.net")
    parsed = parse_bounce(data)
    assert parsed.kind is BounceKind.HEURISTIC
    assert [r.recipient for r in parsed.recipients] == ["ann@example.org"]


def test_dsn_fields_inline_in_a_text_part() -> None:
    text = ("From: MAILER-DAEMON@mx.example.org\nSubject: Delivery failure\n\n"
            "Your message could not be delivered.\nReporting-MTA: dns; mx.example.org\n\n"
            "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.1.1\n"
            "Diagnostic-Code: smtp; 550 5.1.1 unknown\n\nThe mail system\n\nRegards\n")
    parsed = parse_bounce(text.encode())
    assert parsed.kind is BounceKind.DSN
    assert parsed.recipients == (
        BouncedRecipient("ann@example.org", "5.1.1", "failed", "550 5.1.1 unknown", None),)
    first = parse_bounce(b"From: MAILER-DAEMON@mx.example.org\nSubject: Delivery failure\n\n"
                         b"Final-Recipient: rfc822; bob@example.org\nAction: failed\n"
                         b"Status: 5.2.2\n")
    assert [(r.recipient, r.status) for r in first.recipients] == [("bob@example.org", "5.2.2")]


def test_the_last_guard_returns_an_empty_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: bytes) -> ParsedBounce:
        raise ValueError("a step failed")

    monkeypatch.setattr(parse_module, "_parse", broken)
    assert parse_bounce(b"From: a@example.org\n\nx\n") == ParsedBounce(
        BounceKind.UNKNOWN, (), None, (), None, "", "")



def test_dsn_fields_before_final_recipient_belong_to_its_group() -> None:
    """Exim writes `Action:` before `Final-Recipient:`; RFC 3464 sets no order in a group."""
    parsed = parse_bounce(dsn("Reporting-MTA: dns; exim.test\n\n"
                              "Action: delayed\nFinal-Recipient: rfc822;ann@example.org\n"
                              "Status: 4.0.0\nDiagnostic-Code: smtp; 450 4.2.0 Greylisted\n\n"
                              "Action: failed\nFinal-Recipient: rfc822;bob@example.org\n"
                              "Status: 5.0.0\n"))
    assert [(r.recipient, r.action, r.status) for r in parsed.recipients] == [
        ("ann@example.org", "delayed", "4.0.0"), ("bob@example.org", "failed", "5.0.0")]
    only_delayed = parse_bounce(dsn("Action: delayed\nFinal-Recipient: rfc822;ann@example.org\n"
                                    "Status: 4.0.0\n"))
    assert only_delayed.kind is BounceKind.DELAY


def test_a_multiline_smtp_reply_in_the_diagnostic_reads_as_one_sentence() -> None:
    parsed = parse_bounce(dsn(
        "Diagnostic-Code: smtp; 550-Please turn on SMTP Authentication in your mail client.\n"
        "550-mx.example.org [192.0.2.1]:25 is not permitted to\n"
        "550 relay through this server without authentication.\n"
        "Status: 5.0.0\nAction: failed\nFinal-Recipient: rfc822; ann@example.org\n"))
    assert parsed.recipients[0].diagnostic == (
        "550-Please turn on SMTP Authentication in your mail client. mx.example.org "
        "[192.0.2.1]:25 is not permitted to relay through this server without authentication.")


def test_a_report_with_no_recipient_field_is_still_a_bounce() -> None:
    """The message said it is a delivery report: even in plain words, it is read as one."""
    data = dsn("Reporting-MTA: dns; mx.example.org\n", human="Hello there.")
    data = data.replace(b"Subject: Undelivered Mail Returned to Sender", b"Subject: Hello")
    data = data.replace(b"MAILER-DAEMON@mx.example.org (Mail Delivery System)",
                        b"friend@example.net")
    parsed = parse_bounce(data)
    assert parsed.kind is BounceKind.HEURISTIC
    assert [r.recipient for r in parsed.recipients] == ["ann@example.org"]


def test_ses_json_with_raw_control_characters_and_trailing_text() -> None:
    inner = ('{"notificationType": "Bounce", "bounce": {"bouncedRecipients": [{"emailAddress":'
             ' "a@example.org", "status": "5.1.1", "diagnosticCode": "smtp; 550\t5.1.1 no"}]}}')
    wrapped = parse_bounce(("From: no-reply@sns.amazonaws.com\nSubject: AWS Notification\n\n"
                            + json.dumps({"Message": inner}) + "--\n").encode())
    assert wrapped.recipients == (
        BouncedRecipient("a@example.org", "5.1.1", "failed", "550\t5.1.1 no", None),)
    plain = parse_bounce(("From: no-reply@sns.amazonaws.com\nSubject: AWS Notification\n\n"
                          + inner + "--\n").encode())
    assert plain.recipients == wrapped.recipients


@pytest.mark.parametrize("line", [
    "554 <{a}>... Remote protocol error: connection reset",
    "550 <{a}>: Recipient address rejected: mailbox full",
    "550 {a}: mailbox unavailable",
    "550 5.1.2 <{a}>... Host unknown",
])
def test_a_transcript_line_of_a_reply_about_one_address_names_a_recipient(line: str) -> None:
    # RFC 5321 reply code (maybe an enhanced status), the address, then "..." or ":" and why:
    # each such line in a transcript is one recipient with its own explanation.
    data = ("From: MAILER-DAEMON@mx.example.org\nSubject: Returned mail: see transcript\n\n"
            "   ----- Transcript of session follows -----\n"
            "550 <bob@example.net>... User unknown\n"
            + line.format(a="carol@example.com") + "\n")
    parsed = parse_bounce(data.encode())
    assert [r.recipient for r in parsed.recipients] == ["bob@example.net", "carol@example.com"]
    assert "User unknown" in parsed.recipients[0].diagnostic
    assert line.split(" ")[-1] in parsed.recipients[1].diagnostic
    assert "User unknown" not in parsed.recipients[1].diagnostic


@pytest.mark.parametrize("line", [
    "550 carol@example.com is here",  # no "..." or ":" after the address
    "5500 <carol@example.com>: nope",  # not a reply code
    "650 <carol@example.com>: nope",  # not an SMTP reply class
    "550 <carol@example.com>:",  # nothing said about it
])
def test_lines_that_are_not_a_reply_about_an_address(line: str) -> None:
    data = ("From: MAILER-DAEMON@mx.example.org\nSubject: Returned mail: see transcript\n\n"
            "550 <bob@example.net>... User unknown\n" + line + "\n")
    parsed = parse_bounce(data.encode())
    assert [r.recipient for r in parsed.recipients] == ["bob@example.net"]
