"""bounces.parse: standard reports, provider formats, non-standard bounces and auto-replies."""

from __future__ import annotations

import base64
import json

import pytest

from postroom.bounces import (
    BouncedRecipient,
    BounceKind,
    ParsedBounce,
    default_rules,
    parse_bounce,
    qualify_bounce,
)
from postroom.domain.outcomes import FailureReason, FailureType

ORIGINAL = (
    "Return-Path: <bounces+d1.l2.tok@sender.example>\n"
    "Message-ID: <d1.l2.20250301@sender.example>\n"
    "From: News <news@sender.example>\n"
    "To: Ann <ann@example.org>\n"
    "Subject: =?utf-8?q?Caf=C3=A9?= news\n"
    "\n"
    "Hello.\n"
)


def report(*parts: tuple[str, str], report_type: str = "delivery-status",
           headers: str = "") -> bytes:
    """A multipart/report from (content-type line(s), body) parts."""
    text = (
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\n"
        "To: bounces+d1.l2.tok@sender.example\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        f"{headers}"
        "MIME-Version: 1.0\n"
        f"Content-Type: multipart/report; report-type={report_type}; boundary=\"BOUND\"\n"
        "\n"
    )
    for ctype, body in parts:
        text += f"--BOUND\nContent-Type: {ctype}\n\n{body}\n"
    return (text + "--BOUND--\n").encode()


def dsn(fields: str, human: str = "The mail system could not deliver your message.") -> bytes:
    return report(("text/plain; charset=us-ascii", human),
                  ("message/delivery-status", fields), ("message/rfc822", ORIGINAL))


def test_dsn_per_recipient_fields_and_returned_message() -> None:
    parsed = parse_bounce(dsn(
        "Reporting-MTA: dns; mx.example.org\n"
        "Arrival-Date: Mon, 3 Mar 2025 10:15:00 +0100\n"
        "\n"
        "Final-Recipient: rfc822; ann@example.org\n"
        "Original-Recipient: rfc822;ann@example.org\n"
        "Action: failed\n"
        "Status: 5.1.1\n"
        "Remote-MTA: dns; mx1.example.org\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <ann@example.org>: Recipient address\n"
        "    rejected: User unknown\n"
        "\n"
        "Final-Recipient: RFC822; <Bob@Example.org>\n"
        "Action: failed\n"
        "Status: 5.2.2 (mailbox full)\n"
        "Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\n"))
    assert parsed.kind is BounceKind.DSN
    assert parsed.recipients == (
        BouncedRecipient("ann@example.org", "5.1.1", "failed",
                         "550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown",
                         "mx1.example.org"),
        BouncedRecipient("Bob@Example.org", "5.2.2", "failed", "552 5.2.2 Mailbox full", None),
    )
    assert parsed.original_message_id == "<d1.l2.20250301@sender.example>"
    assert ("Subject", "Café news") in parsed.original_headers
    assert parsed.subject == "Undelivered Mail Returned to Sender"
    assert parsed.from_.startswith("MAILER-DAEMON@mx.example.org")
    assert parsed.feedback_type is None


def test_dsn_recipients_without_blank_lines_between_them() -> None:
    parsed = parse_bounce(dsn(
        "Reporting-MTA: dns; mx.example.org\n"
        "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n"
        "Final-Recipient: rfc822; b@example.org\nAction: failed\nStatus: 5.1.2\n"))
    assert [(r.recipient, r.status) for r in parsed.recipients] == [
        ("a@example.org", "5.1.1"), ("b@example.org", "5.1.2")]


def test_dsn_reports_the_address_postroom_sent_to_when_it_was_forwarded() -> None:
    parsed = parse_bounce(dsn("Final-Recipient: rfc822; ann.lee@forward.example\n"
                              "Original-Recipient: rfc822;ann@example.org\nAction: failed\n"
                              "Status: 5.1.1\n\n"
                              "Final-Recipient: rfc822; \"b..c\"@example.org\n"
                              "Original-Recipient: rfc822;b..c@example.org\nAction: failed\n"
                              "Status: 5.1.1\n"))
    assert [r.recipient for r in parsed.recipients] == ["ann@example.org", '"b..c"@example.org']


def test_dsn_actions_decide_the_kind() -> None:
    def kind(*actions: str) -> BounceKind:
        fields = "".join(f"\nFinal-Recipient: rfc822; r{i}@example.org\nAction: {a}\n"
                         f"Status: {'4.4.1' if a == 'delayed' else '2.0.0'}\n"
                         for i, a in enumerate(actions))
        return parse_bounce(dsn("Reporting-MTA: dns; mx.example.org\n" + fields)).kind

    assert kind("delayed") is BounceKind.DELAY
    assert kind("delivered", "relayed") is BounceKind.SUCCESS
    assert kind("expanded") is BounceKind.SUCCESS
    assert kind("delayed", "failed") is BounceKind.DSN


def test_dsn_without_diagnostic_uses_the_human_text_and_its_smtp_stage() -> None:
    human = ("<ann@example.org>: host mx.example.org[192.0.2.1] said: 550 Unknown user\n"
             "    ann@example.org (in reply to end of DATA command)\n")
    parsed = parse_bounce(dsn("Final-Recipient: rfc822; ann@example.org\nAction: failed\n"
                              "Status: 5.0.0\n", human))
    assert "550 Unknown user" in parsed.recipients[0].diagnostic
    with_code = parse_bounce(dsn("Final-Recipient: rfc822; ann@example.org\nAction: failed\n"
                                 "Status: 5.0.0\nDiagnostic-Code: smtp; 550 Unknown user\n",
                                 human))
    assert with_code.recipients[0].diagnostic == (
        "550 Unknown user (in reply to end of DATA command)")


def test_dsn_status_missing_is_taken_from_the_diagnostic() -> None:
    parsed = parse_bounce(dsn("Final-Recipient: rfc822; ann@example.org\nAction: failed\n"
                              "Diagnostic-Code: smtp; 550 5.1.1 User unknown\n"))
    assert parsed.recipients[0].status == "5.1.1"


def test_encoded_parts_and_header_only_originals() -> None:
    fields = (b"Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.1.1\n")
    headers = ORIGINAL.split("\n\n")[0]
    data = report(("text/plain", "failed"),
                  ("message/delivery-status\nContent-Transfer-Encoding: base64",
                   base64.encodebytes(fields).decode()),
                  ("text/rfc822-headers", headers))
    parsed = parse_bounce(data)
    assert [(r.recipient, r.status) for r in parsed.recipients] == [("ann@example.org", "5.1.1")]
    assert parsed.original_message_id == "<d1.l2.20250301@sender.example>"


def feedback(fields: str, original: str = ORIGINAL) -> ParsedBounce:
    return parse_bounce(report(("text/plain", "This is an abuse report."),
                               ("message/feedback-report", fields),
                               ("message/rfc822", original), report_type="feedback-report"))


def test_arf_recipient_from_the_report_fields() -> None:
    parsed = feedback("Feedback-Type: abuse\nUser-Agent: FBL/1\nVersion: 1\n"
                      "Original-Rcpt-To: <carol@example.net>\nOriginal-Rcpt-To: dan@example.net\n")
    assert parsed.kind is BounceKind.ARF
    assert parsed.feedback_type == "abuse"
    assert [r.recipient for r in parsed.recipients] == ["carol@example.net", "dan@example.net"]
    assert parsed.recipients[0].diagnostic == "feedback-type: abuse"
    removal = feedback("Feedback-Type: abuse\nRemoval-Recipient: erin@example.net\n")
    assert [r.recipient for r in removal.recipients] == ["erin@example.net"]


def test_arf_recipient_from_the_returned_message_or_none() -> None:
    parsed = feedback("Feedback-Type: fraud\nVersion: 1\n")
    assert [r.recipient for r in parsed.recipients] == ["ann@example.org"]
    anonymous = feedback("Feedback-Type: abuse\n", original="Subject: redacted\n\nx\n")
    assert [r.recipient for r in anonymous.recipients] == [None]


def test_hotmail_jmrp_and_apple_unsubscribe_are_feedback() -> None:
    jmrp = (
        "From: staff@hotmail.com\nTo: fbl@sender.example\n"
        "Subject: complaint about message from 192.0.2.1\nMIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"J\"\n\n--J\nContent-Type: message/rfc822\n\n"
        "X-HmXmrOriginalRecipient: <frank@hotmail.example>\n" + ORIGINAL + "\n--J--\n")
    parsed = parse_bounce(jmrp.encode())
    assert (parsed.kind, parsed.feedback_type) == (BounceKind.ARF, "abuse")
    assert [r.recipient for r in parsed.recipients] == ["frank@hotmail.example"]
    apple = parse_bounce(b"From: gina@icloud.example\nTo: opt-out@sender.example\n"
                         b"Subject: unsubscribe\nX-Apple-Unsubscribe: true\n\nunsubscribe\n")
    assert (apple.kind, apple.feedback_type) == (BounceKind.ARF, "unsubscribe")
    assert [r.recipient for r in apple.recipients] == ["gina@icloud.example"]


def test_amazon_ses_json_notifications() -> None:
    def ses(message: dict[str, object]) -> ParsedBounce:
        body = json.dumps({"Type": "Notification", "Message": json.dumps(message)})
        return parse_bounce(("From: no-reply@sns.amazonaws.com\nTo: ops@sender.example\n"
                             "Subject: AWS Notification Message\n\n" + body).encode())

    bounce = ses({"notificationType": "Bounce", "bounce": {
        "bounceType": "Permanent", "bouncedRecipients": [
            {"emailAddress": "hal@example.org", "action": "failed", "status": "5.1.1",
             "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}})
    assert bounce.kind is BounceKind.DSN
    assert bounce.recipients == (BouncedRecipient("hal@example.org", "5.1.1", "failed",
                                                  "550 5.1.1 user unknown", None),)
    complaint = ses({"notificationType": "Complaint", "complaint": {
        "complainedRecipients": [{"emailAddress": "ivy@example.org"}]}})
    assert complaint.kind is BounceKind.ARF
    delivery = ses({"notificationType": "Delivery", "delivery": {
        "recipients": ["joe@example.org"], "smtpResponse": "250 2.6.0 Message received"}})
    assert (delivery.kind, delivery.recipients[0].status) == (BounceKind.SUCCESS, "2.6.0")


def test_exim_bounce_with_failed_recipients_header() -> None:
    data = (
        "From: Mail Delivery System <Mailer-Daemon@mx.example.org>\n"
        "To: bounces+d1.l2.tok@sender.example\n"
        "Subject: Mail delivery failed: returning message to sender\n"
        "X-Failed-Recipients: ann@example.org\n\n"
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        "  ann@example.org\n"
        "    SMTP error from remote mail server after RCPT TO:<ann@example.org>:\n"
        "    host mx.example.org [192.0.2.1]: 550 5.1.1 User unknown\n\n"
        "------ This is a copy of the message, including all the headers. ------\n\n"
        + ORIGINAL)
    parsed = parse_bounce(data.encode())
    assert parsed.kind is BounceKind.HEURISTIC
    [recipient] = parsed.recipients
    assert (recipient.recipient, recipient.status, recipient.action) == (
        "ann@example.org", "5.1.1", "failed")
    assert "550 5.1.1 User unknown" in recipient.diagnostic
    assert parsed.original_message_id == "<d1.l2.20250301@sender.example>"


def test_qmail_bounce_names_each_recipient_in_its_paragraph() -> None:
    data = (
        "From: MAILER-DAEMON@mx.example.org\nTo: bounces@sender.example\n"
        "Subject: failure notice\n\n"
        "Hi. This is the qmail-send program at mx.example.org.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        "<ann@example.org>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
        "<bob@example.org>:\n192.0.2.25 does not like recipient.\n"
        "Remote host said: 552 5.2.2 <bob@example.org>: Mailbox full\n\n"
        "--- Below this line is a copy of the message.\n\n" + ORIGINAL)
    parsed = parse_bounce(data.encode())
    assert [(r.recipient, r.status) for r in parsed.recipients] == [
        ("ann@example.org", "5.1.1"), ("bob@example.org", "5.2.2")]
    assert "Mailbox full" not in parsed.recipients[0].diagnostic


def test_delay_warning_without_dsn() -> None:
    data = (b"From: Mail Delivery System <mailer-daemon@mx.example.org>\n"
            b"To: bounces@sender.example\n"
            b"Subject: Warning: message 1tq7Zb-00AbCd-2x delayed 24 hours\n\n"
            b"A message that you sent has not yet been delivered to one or more of its\n"
            b"recipients after more than 24 hours on the queue on mx.example.org.\n\n"
            b"  ann@example.org\n    Delay reason: SMTP error: 451 4.7.1 Greylisted\n")
    parsed = parse_bounce(data)
    assert parsed.kind is BounceKind.DELAY
    assert [(r.recipient, r.action) for r in parsed.recipients] == [
        ("ann@example.org", "delayed")]


def test_auto_replies() -> None:
    by_header = parse_bounce(b"From: Kim <kim@example.org>\nTo: news@sender.example\n"
                             b"Subject: Re: News\nAuto-Submitted: auto-replied\n"
                             b"In-Reply-To: <d1.l2.20250301@sender.example>\n\n"
                             b"I am away until Monday.\n")
    assert by_header.kind is BounceKind.AUTOREPLY
    assert [r.recipient for r in by_header.recipients] == ["kim@example.org"]
    assert by_header.original_message_id == "<d1.l2.20250301@sender.example>"
    for header in (b"X-Autoreply: yes", b"Precedence: auto_reply",
                   b"Subject: Out of Office: News", b"Subject: Automatic reply: News"):
        parsed = parse_bounce(b"From: kim@example.org\nTo: news@sender.example\n" + header
                              + b"\n\nAway.\n")
        assert parsed.kind is BounceKind.AUTOREPLY, header


def test_an_ordinary_message_is_unknown() -> None:
    parsed = parse_bounce(b"From: Lee <lee@example.org>\nTo: news@sender.example\n"
                          b"Subject: Question\n\nWhen is the next issue due?\n")
    assert parsed == ParsedBounce(BounceKind.UNKNOWN, (), None, (), None, "Question",
                                  "Lee <lee@example.org>")


def test_damaged_input_gives_a_value() -> None:
    for data in (b"", b"\x00\xff" * 100, b"Subject: x\n",
                 b"Content-Type: multipart/report; boundary=\"B\"\n\n--B\nContent-Type: "
                 b"message/delivery-status\n\nFinal-Recipient: rfc822; ann@exa",
                 b"Content-Type: text/plain; charset=no-such-charset\n"
                 b"From: MAILER-DAEMON@x.example\n\n<ann@example.org>: 550 User unknown\xe9\n"):
        assert isinstance(parse_bounce(data), ParsedBounce)
    odd = parse_bounce(b"Content-Type: text/plain; charset=no-such-charset\n"
                       b"From: MAILER-DAEMON@x.example\nSubject: failure notice\n\n"
                       b"<ann@example.org>: 550 User unknown\xe9\n")
    assert [r.recipient for r in odd.recipients] == ["ann@example.org"]


def test_a_bounce_marked_auto_submitted_is_still_a_bounce() -> None:
    data = (b"From: Microsoft Outlook <MicrosoftExchange329e71ec88ae@contoso.example>\n"
            b"To: bounces@sender.example\nSubject: Undeliverable: Hello\n"
            b"Auto-Submitted: auto-replied\n\n"
            b"Delivery has failed to these recipients or groups:\n\n"
            b"ann@contoso.example\n"
            b"The email address you entered couldn't be found.\n")
    parsed = parse_bounce(data)
    assert parsed.kind is BounceKind.HEURISTIC
    assert [r.recipient for r in parsed.recipients] == ["ann@contoso.example"]


def test_a_vacation_notice_about_a_delivery_newsletter_is_an_auto_reply() -> None:
    data = (b"From: Kim <kim@example.org>\nTo: news@sender.example\n"
            b"Subject: Automatic reply: Delivery status of your order\n"
            b"Auto-Submitted: auto-replied\n\n"
            b"I am away; mail to this address could not be delivered to me until Monday.\n")
    parsed = parse_bounce(data)
    assert parsed.kind is BounceKind.AUTOREPLY
    assert [r.recipient for r in parsed.recipients] == ["kim@example.org"]


@pytest.mark.parametrize(
    ("body", "recipient", "status", "verdict"),
    [
        # Exchange 2010 plain text: "Display Name (address)"
        ("Delivery has failed to these recipients or groups:\n\nJohn Doe (john@corp.example)\n"
         "The e-mail address you entered couldn't be found.\n\n"
         "Diagnostic information for administrators:\n\nGenerating server: EX1.corp.example\n\n"
         "john@corp.example\n#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##\n",
         "john@corp.example", "5.1.1", (FailureType.HARD, FailureReason.USER_UNKNOWN)),
        # Exchange 2003: "'address' on <date>"
        ("Your message did not reach some or all of the intended recipients.\n\n"
         "      Subject:\tHello\n\nThe following recipient(s) cannot be reached:\n\n"
         "      'quinn@old.example' on 3/3/2025 10:16 AM\n"
         "            550 5.7.1 Unable to relay\n", "quinn@old.example", "5.7.1",
         (FailureType.SOFT, FailureReason.REFUSED)),
        # GroupWise-style sentence
        ("The message that you sent was not delivered to peter@gw.example\n"
         "because the user's mailbox is over the quota limit.\n", "peter@gw.example", None,
         (FailureType.SOFT, FailureReason.MAILBOX_FULL)),
        # a gateway listing "address - reason"
        ("Your message couldn't be delivered to the following recipients:\n\n"
         "  maria@partner.example - Rejected: Recipient email address is possibly incorrect\n",
         "maria@partner.example", None, (FailureType.HARD, FailureReason.USER_UNKNOWN)),
    ],
)
def test_bounce_shapes_of_mtas_outside_the_corpus(
        body: str, recipient: str, status: str | None,
        verdict: tuple[FailureType, FailureReason]) -> None:
    data = ("From: postmaster@mx.example.net\nTo: bounces+d1.l2.tok@sender.example\n"
            "Subject: Undeliverable: Hello\n\n" + body).encode()
    parsed = parse_bounce(data)
    assert parsed.kind is BounceKind.HEURISTIC
    assert [(r.recipient, r.status) for r in parsed.recipients] == [(recipient, status)]
    [(_, qualification)] = qualify_bounce(default_rules(), parsed)
    assert (qualification.failure_type, qualification.reason) == verdict


def test_dsn_recipient_at_a_dotless_domain_is_read_from_the_report() -> None:
    """A standard Postfix DSN for a local user (`nosuchuser@localhost`): the delivery-status
    part is used, its status too; a dotless domain is still the address the report is about."""
    parsed = parse_bounce(dsn(
        "Reporting-MTA: dns; localhost\n"
        "\n"
        "Final-Recipient: rfc822; nosuchuser@localhost\n"
        "Original-Recipient: rfc822;nosuchuser@localhost\n"
        "Action: failed\n"
        "Status: 5.1.1\n"
        "Diagnostic-Code: X-Postfix; unknown user: \"nosuchuser\"\n",
        human="<nosuchuser@localhost>: unknown user: \"nosuchuser\""))
    assert parsed.kind is BounceKind.DSN
    assert [(r.recipient, r.status, r.action) for r in parsed.recipients] == [
        ("nosuchuser@localhost", "5.1.1", "failed")]
    ((_, verdict),) = qualify_bounce(default_rules(), parsed)
    assert (verdict.failure_type, verdict.reason) == (FailureType.HARD,
                                                      FailureReason.USER_UNKNOWN)


def test_dsn_field_values_that_are_not_addresses_name_no_recipient() -> None:
    parsed = parse_bounce(dsn(
        "Final-Recipient: rfc822; nobody\n"
        "Action: failed\n"
        "Status: 5.1.1\n",
        human="<ann@example.org>: unknown user"))
    assert [r.recipient for r in parsed.recipients] == ["ann@example.org"]
