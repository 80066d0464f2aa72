"""Recognizing archived copies: the trace block a receiving MTA prepends, line ends, IDs."""

from __future__ import annotations

import hashlib

from postroom.archive.reconcile import Kind, fingerprint, parse_message_id, strip_trace

ORIGINAL = (b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com;\r\n\tb=abc\r\n"
            b"Message-ID:\r\n <12.3.a1b2c3@news.example>\r\n"
            b"Received: kept, it is part of what was sent\r\n"
            b"Subject: Hi\r\n\r\nBody line\r\n.dot line\r\n")

POSTFIX_TRACE = (b"Return-Path: <archive-bounces@example.com>\n"
                 b"X-Original-To: vault@example.org\n"
                 b"Delivered-To: vault@example.org\n"
                 b"Received: from localhost (localhost [127.0.0.1])\n"
                 b"\tby localhost (Postfix) with ESMTP id 4F1\n"
                 b"\tfor <vault@example.org>; Fri,  4 Dec 2026 17:00:00 +0000 (UTC)\n")


def _as_maildir(data: bytes) -> bytes:
    return POSTFIX_TRACE + data.replace(b"\r\n", b"\n")


def test_the_trace_block_and_lf_line_ends_are_undone_exactly() -> None:
    assert strip_trace(_as_maildir(ORIGINAL)) == ORIGINAL
    assert strip_trace(ORIGINAL) == ORIGINAL  # nothing prepended: unchanged
    printed = fingerprint(_as_maildir(ORIGINAL))
    assert printed.sha256 == hashlib.sha256(ORIGINAL).hexdigest()
    assert printed.message_id == "<12.3.a1b2c3@news.example>" and printed.size == len(ORIGINAL)


def test_a_changed_byte_changes_the_hash_and_crlf_copies_are_not_converted() -> None:
    altered = _as_maildir(ORIGINAL).replace(b"Body line", b"Body lime")
    assert fingerprint(altered).sha256 != hashlib.sha256(ORIGINAL).hexdigest()
    crlf = POSTFIX_TRACE.replace(b"\n", b"\r\n") + ORIGINAL  # IMAP FETCH gives CRLF
    assert fingerprint(crlf).sha256 == hashlib.sha256(ORIGINAL).hexdigest()


def test_message_ids_say_what_they_claim() -> None:
    assert parse_message_id("<12.3.a1b2c3@news.example>").kind is Kind.LOG
    assert parse_message_id("<12.3.a1b2c3@news.example>").log_id == 12
    proof = parse_message_id("<proof.2.3.a1b2c3@news.example>")
    assert (proof.kind, proof.delivery_id) == (Kind.PROOF, 3)
    assert parse_message_id("<CAF=x@mail.gmail.com>").kind is Kind.OTHER
    assert parse_message_id(None).kind is Kind.OTHER
    assert fingerprint(b"Subject: none\r\n\r\nx").message_id is None


def test_a_journal_report_carries_the_original_byte_for_byte() -> None:
    from email import message_from_bytes
    from email.policy import default

    from postroom.archive.journal import journal_report, unwrap

    report = journal_report(ORIGINAL, sender="archive-bounces@example.com",
                            archive="vault@example.org")
    assert unwrap(report) == ORIGINAL and unwrap(ORIGINAL) is None
    assert journal_report(ORIGINAL, sender="archive-bounces@example.com",
                          archive="vault@example.org") == report  # the same on a retry
    parsed = message_from_bytes(report, policy=default)
    facts, attached = parsed.iter_parts()
    assert "SHA-256: " + hashlib.sha256(ORIGINAL).hexdigest() in facts.get_content()
    assert "Message-ID: <12.3.a1b2c3@news.example>" in facts.get_content()
    assert attached.get_content_type() == "message/rfc822"
    # stored by Postfix (trace block, LF), it still verifies as the original
    printed = fingerprint(_as_maildir(report))
    assert printed.sha256 == hashlib.sha256(ORIGINAL).hexdigest()
    assert printed.message_id == "<12.3.a1b2c3@news.example>"
    tampered = _as_maildir(report).replace(b"Body line", b"Body lime")
    assert fingerprint(tampered).sha256 != hashlib.sha256(ORIGINAL).hexdigest()
