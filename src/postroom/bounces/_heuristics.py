"""Non-standard bounces: recognise one by its wording, find its recipients and what went wrong.

Mailman's order applies: this runs only when a message carries no RFC 3464 delivery-status
part. The signals and patterns are the *shapes* the big MTAs and providers use (Exim's indented
address list, qmail's `<address>:` paragraphs, Sendmail's "permanent fatal errors" list,
Gmail's "Delivery to the following recipient failed permanently", Exchange's "did not reach the
following recipient(s)", Lotus's "Failure Reasons", ...). None of them names a file or an
address of the corpus, so an unseen MTA that words its bounce the same way is read too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import IntEnum

from postroom.bounces._text import ADDRESS, clean_address, enhanced_status, find_addresses
from postroom.bounces.model import BouncedRecipient

__all__ = [
    "Autoreply",
    "autoreply_signal",
    "is_autoreply",
    "is_bounce",
    "is_delay",
    "is_mailer",
    "recipients_from_text",
]

_A = ADDRESS.pattern
_DAEMON = re.compile(
    r"mailer[-_ ]?daemon|postmaster|mail ?delivery ?(?:system|subsystem|service)"
    r"|mail ?administrator|ndr administrator|mmsc|returned mail|bounce", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status|failure|failed|notification|report|problem|has"
    r" failed)|failure notice|failed delivery|failure delivery|delivery failure|returned mail"
    r"|mail delivery failed|non[- ]?delivery|could not be delivered|not delivered|mail system"
    r" error|delayed mail|message delayed|warning: message|delivery delayed|permanent delivery"
    r"|error sending your mail|nondeliverable|returned to sender", re.I)
_BOUNCE_BODY = re.compile(
    r"could not be delivered|was not delivered|were not delivered|not be delivered|undeliverable"
    r"|permanent(?:ly)? (?:fatal )?(?:error|failure)|failed permanently|delivery has failed"
    r"|unable to deliver|wasn'?t able to deliver|did not reach the following|could not deliver"
    r"|error delivering|delivery (?:to the following|status notification|failed)"
    r"|has not yet been delivered|following addresses had|rejected by (?:a )?remote mail server"
    r"|returned mail|were unable to deliver|message delivery has failed|recipients? failed"
    r"|did not receive this message|trouble delivering|delivery attempts will continue"
    r"|not (?:a )?member of (?:this|the) (?:mailing )?list|not allowed to post", re.I)
_DELAY = re.compile(
    r"has not yet been delivered|has been delayed|delivery (?:is )?delayed|will (?:be|continue"
    r" to be) retried|delivery attempts will continue|warning message only|this is a warning"
    r"|still being retried|message delayed|delayed (?:mail|delivery)", re.I)
_AUTOREPLY_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort|respuesta|risposta)|autoreply"
    r"|auto:|out of (?:the )?office|away (?:from|until)|on vacation|vacation|abwesen"
    r"|r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica|absence|afwezig"
    r"|fuera de la oficina|自動応答|自動返信)", re.I)

# A line whose business is one recipient: the address alone (maybe labelled, bracketed, quoted,
# followed by a colon or a mailto link), `<address>: reason`, or `address reason-words`.
_RECIPIENT_LINES = tuple(re.compile(p, re.I) for p in (
    rf"^\s*(?:[*>\-]+\s*)?(?:(?:final-|original-)?recipient(?:\s+address)?|address|rcpt)?"
    rf"\s*:?\s*[\"']?<?({_A})>?[\"']?\s*(?:<mailto:[^>]*>)?\s*[:.,]?\s*$",
    rf"^\s*(?:[*>\-]+\s*)?<({_A})>\s*:",
    rf"^\s*(?:[*>\-]+\s*)?[\"']?({_A})[\"']?:\s",
    rf"^\s*(?:[*>\-]+\s*)?[\"']?({_A})[\"']?\s+(?:on\s|\[|\(|<mailto|invalid|error|unknown"
    rf"|not\s|does not|user|mailbox|is\s|was\s|could|failed|rejected)",
    # Exchange: "Display Name (address)" alone on its line
    rf"^\s*[^<>()@\n]{{1,80}}\(({_A})\)\s*$",
    # An SMTP reply about one address (RFC 5321 reply code, the address, then why):
    # "554 <a@b>... reason", "550 <a@b>: reason", "550 5.1.1 a@b: reason"
    rf"^\s*[245]\d\d(?: +[245]\.\d{{1,3}}\.\d{{1,3}})? +<?({_A})>?(?:\.\.\.|:)\s*\S",
))
# Phrases that name the recipient inside a sentence.
_RECIPIENT_PHRASES = tuple(re.compile(p, re.I) for p in (
    rf"(?:deliver(?:ing|ed|y)?|send(?:ing)?|sent|transmit\w*|undeliverable|failed|fail|message"
    rf"|mail)\s+(?:(?:your|the|this)\s+(?:mail|message|e-?mail)\s+)?(?:to|for)\s*:?\s*"
    rf"\"?<?({_A})",
    rf"(?:unknown|invalid|illegal|no such|bad|not a valid)\s+(?:local\s+)?(?:user|recipient"
    rf"|address|mailbox|final delivery userid|alias)\w*\s*:?\s*\"?<?({_A})",
    rf"(?:recipient|user|mailbox|address(?:ee)?)(?:\(s\))?\s*:\s*\"?<?({_A})",
    rf"RCPT\s+TO\s*:\s*<?({_A})",
    rf"\berrors?\s*:\s*<?({_A})",
    rf"\(({_A})\)\s+(?:not listed|is not|does not)",
    rf"<({_A})>\.\.\.\s*\S",  # Sendmail: "550 <user@example.org>... User unknown"
    rf"member of (?:this|the) (?:mailing )?list\s*<({_A})>",
))
_SENDER = re.compile(
    rf"(?:mail\s+from|envelope-from|return-path|reply-to|sender|from)\s*[:=]?\s*<?({_A})", re.I)
_ROLE = re.compile(r"^(?:postmaster|mailer-daemon|abuse|support|no-?reply|noreply|root"
                   r"|hostmaster|webmaster|bounces?|helpdesk|admin)(?:[+-].*)?@", re.I)
_MAX_BLOCK_LINES = 40
_MAX_RECIPIENTS = 100


def is_mailer(*, subject: str, from_: str, failed_header: bool) -> bool:
    """Signs that a mail system, not a person, wrote the message."""
    return failed_header or bool(_DAEMON.search(from_)) or bool(_BOUNCE_SUBJECT.search(subject))


def is_bounce(*, subject: str, from_: str, text: str, failed_header: bool) -> bool:
    """Whether a message without a DSN part reads as a bounce of the mail it answers."""
    return (failed_header or bool(_DAEMON.search(from_)) or bool(_BOUNCE_SUBJECT.search(subject))
            or bool(_BOUNCE_BODY.search(text[:20000])))


def is_delay(*, subject: str, text: str) -> bool:
    """A warning that delivery is still being tried, not a failure."""
    return bool(_DELAY.search(subject) or _DELAY.search(text[:20000]))


class Autoreply(IntEnum):
    """How sure a message is an auto-reply. Bounces carry `Auto-Submitted: auto-replied` too,
    so that header alone is weak; vacation headers and subjects are strong."""

    NO = 0
    WEAK = 1
    STRONG = 2


def autoreply_signal(headers: Iterable[tuple[str, str]], subject: str) -> Autoreply:
    """RFC 3834 and the de-facto headers of vacation responders, or a vacation-like subject."""
    found = Autoreply.NO
    for name, value in headers:
        key, low = name.lower(), value.lower()
        if key == "auto-submitted" and low.startswith("auto-replied"):
            found = Autoreply.WEAK
        if key in ("x-autoreply", "x-autorespond", "x-autoresponder", "x-vacation") or (
                key == "precedence" and "auto_reply" in low) or (
                key == "x-apple-action" and "vacation" in low):
            return Autoreply.STRONG
    return Autoreply.STRONG if _AUTOREPLY_SUBJECT.search(subject) else found


def is_autoreply(headers: Iterable[tuple[str, str]], subject: str) -> bool:
    """Any sign of an auto-reply (see `autoreply_signal`)."""
    return autoreply_signal(headers, subject) is not Autoreply.NO


def _candidates(lines: list[str], exclude: set[str], *,
                unique: bool = True) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    seen: set[str] = set()
    for number, line in enumerate(lines):
        if len(line) > 1000:
            continue
        matches = [m.group(1) for p in _RECIPIENT_LINES if (m := p.match(line))]
        matches += [m.group(1) for p in _RECIPIENT_PHRASES for m in p.finditer(line)]
        for address in map(clean_address, matches):
            key = address.lower()
            if (unique and key in seen) or key in exclude:
                continue
            seen.add(key)
            found.append((number, address))
    return found


def _block(lines: list[str], start: int, end: int, address: str) -> str:
    """The lines about one recipient: from its line to the next recipient's, plus any other
    line that names it (a Sendmail transcript names each recipient after the list)."""
    block = lines[start:min(end, start + _MAX_BLOCK_LINES)]
    key = address.lower()
    extra: list[str] = []
    for number, line in enumerate(lines):
        if start <= number < end or key not in line.lower():
            continue
        extra.extend(lines[number:number + 3])
    body = "\n".join(block + extra)
    rest = ADDRESS.sub("", body)
    if len(re.sub(r"\W", "", rest)) < 12:
        body = "\n".join(lines[:_MAX_BLOCK_LINES * 3])
    return _squash(body)


def _squash(text: str) -> str:
    return re.sub(r"[ \t]*\n[ \t]*", "\n", text.strip())[:4000]


def recipients_from_text(text: str, *, exclude: Iterable[str], failed: Iterable[str],
                         fallback: Iterable[str], action: str) -> list[BouncedRecipient]:
    """Recipients of a non-standard bounce, each with the text that explains its failure.

    `failed` are addresses the bounce names in a header (X-Failed-Recipients); `exclude` are
    the sender's own addresses, which bounces quote everywhere; `fallback` (the returned
    message's To) is used when the text names nobody.
    """
    lines = text.split("\n")
    excluded = {a.lower() for a in exclude}
    excluded |= {m.group(1).lower() for m in _SENDER.finditer(text)} - {
        a.lower() for a in failed}
    found = _candidates(lines, excluded)
    # A header that names the failed recipients adds to what the text says; when the text
    # names them too, the text decides where each one's explanation is.
    named = {address.lower() for _, address in found}
    positions = {addr.lower(): n for n, addr in reversed(find_addresses(text))}
    for address in dict.fromkeys(failed):
        if address and address.lower() not in named:
            found.append((positions.get(address.lower(), len(lines)), address))
            named.add(address.lower())
    found.sort(key=lambda item: item[0])
    if not found:
        found = [(n, a) for n, a in find_addresses(text)
                 if a.lower() not in excluded and not _ROLE.match(a)][:1]
    if not found:
        found = [(0, a) for a in list(dict.fromkeys(fallback))[:1]]
    found = found[:_MAX_RECIPIENTS]
    mentions = _candidates(lines, excluded, unique=False) + found
    result = []
    for number, address in found:
        # The block ends where the text turns to another recipient.
        end = min((n for n, other in mentions
                   if n > number and other.lower() != address.lower()), default=len(lines))
        diagnostic = _block(lines, number, end, address)
        result.append(BouncedRecipient(
            recipient=address, status=enhanced_status(diagnostic), action=action,
            diagnostic=diagnostic, remote_mta=None))
    return result
