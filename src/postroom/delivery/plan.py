"""A delivery made ready to send: resolved properties, compiled content, pure steps.

`Plan.render()` turns one target into the bytes of its message (and its mirror page);
`Plan.settle()` turns the outcome of one attempt into the log update (sent, failed, or pending
again with the time of the retry). Both are pure: the clock arrives as `now`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property

from postroom.bounces.rules import Rule, default_rules, qualify_smtp_reply
from postroom.compose.charsets import Charset, charset_for
from postroom.compose.compiled import CompiledShape, Written, compile_shape
from postroom.compose.dkim import DkimSigner
from postroom.compose.extra_headers import parse_extra_headers
from postroom.compose.html import inline_css
from postroom.compose.mime import (
    MessageWriter,
    Parts,
    decoded_part,
    make_message_id,
    parts_for,
)
from postroom.compose.personalize import (
    CompiledContent,
    RenderedContent,
    TemplateLimits,
    compile_content,
    recipient_context,
)
from postroom.compose.tokens import MIRROR, UNSUBSCRIBE, make_token, verp_address
from postroom.compose.wire import recipient_wire_address
from postroom.domain.addresses import WireAddress, split_mailbox, wire_address
from postroom.domain.models import Delivery, LogUpdate, Recipient, Target
from postroom.domain.outcomes import FailureReason, FailureType, Outcome, Verdict
from postroom.domain.properties import MirrorMode, Properties
from postroom.domain.states import LogStatus
from postroom.errors import InputError
from postroom.settings import DefaultsSettings, SendingSettings

__all__ = ["Links", "Message", "Plan", "Planner", "RetryPolicy", "make_plan"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int
    retry_period: timedelta
    validity: timedelta
    quick_retries: int
    quick_delay: timedelta

    def delay(self, attempts: int) -> timedelta:
        """Wait before the next attempt, after `attempts` attempts failed temporarily."""
        return self.quick_delay if attempts <= self.quick_retries else self.retry_period

    def may_retry(self, attempts: int) -> bool:
        """Whether another attempt may follow `attempts` failed ones.

        The quick in-run retries come on top of the delivery's `max_retries` (DESIGN.md §3:
        at most 5, every retry period); `max_retries = 0` means no retry at all.
        """
        if self.max_retries == 0:
            return False
        return attempts <= self.quick_retries + self.max_retries


@dataclass(frozen=True, slots=True)
class Links:
    """Where links in messages point, and the key that signs them."""

    base_url: str
    secret: bytes
    unsubscribe_mailto: str  # ASCII (A-label domain); settings refuse a non-ASCII local part

    def token(self, purpose: str, log_id: int | None) -> str:
        """The signed token of a link (`proof` in proofs, where links are inactive)."""
        return "proof" if log_id is None else make_token(self.secret, purpose, log_id)

    def mirror_url(self, log_id: int | None) -> str:
        return f"{self.base_url}/m/{self.token(MIRROR, log_id)}"

    def unsubscribe_url(self, log_id: int | None) -> str:
        return self.unsubscribe_url_for(self.token(UNSUBSCRIBE, log_id))

    def list_unsubscribe(self, log_id: int | None) -> str:
        return self.list_unsubscribe_for(self.token(UNSUBSCRIBE, log_id))

    def unsubscribe_url_for(self, token: str) -> str:
        return f"{self.base_url}/u/{token}"

    def list_unsubscribe_for(self, token: str) -> str:
        """The List-Unsubscribe value (RFC 2369, RFC 8058) of an unsubscribe token."""
        # A token is digits, "." and URL-safe base64 (or "proof"): nothing urllib's quote()
        # escapes, so quoting "unsubscribe " + token only turns the space into %20.
        mailto = f"mailto:{self.unsubscribe_mailto}?subject=unsubscribe%20{token}"
        return f"<{mailto}>, <{self.unsubscribe_url_for(token)}>"


@dataclass(frozen=True, slots=True)
class Message:
    target: Target
    data: bytes
    message_id: str
    recipient: str  # the envelope recipient (A-label domain)
    sender: str  # the envelope sender: errors-to with the log's VERP token
    smtputf8: bool = False
    mirror_html: bytes | None = None  # the HTML part's bytes, for the mirror page


@dataclass(frozen=True)
class Plan:
    delivery: Delivery
    props: Properties
    content: CompiledContent
    charset: Charset
    from_name: str
    from_address: str
    reply_to: str  # an address, or `Name <address>`
    errors_to: str
    archive: bool
    retry: RetryPolicy
    links: Links
    extra_headers: tuple[tuple[str, str], ...]
    resource_validity: timedelta
    signer: DkimSigner | None = None
    rules: tuple[Rule, ...] = ()  # qualification rules; empty: the shipped defaults
    compiled_path: bool = True  # False: every message through the general writer (tests)

    @property
    def valid_until(self) -> datetime:
        start = self.delivery.started_at or self.delivery.analyzed_at or self.delivery.created_at
        return start + self.retry.validity

    @property
    def mirror(self) -> bool:
        """Whether each message gets a mirror page."""
        mode = self.props.mirror_mode
        return mode in (MirrorMode.FORCE, MirrorMode.ID_ONLY) or (
            mode is MirrorMode.AUTO and "mirror_url" in self.content.variables)

    def personalize(self, recipient: Recipient, log_id: int | None) -> RenderedContent:
        """The recipient's subject, HTML and text (TemplateError if the content fails)."""
        unsubscribe = (self.links.token(UNSUBSCRIBE, log_id)
                       if "unsubscribe_url" in self.content.variables else "")
        return self._personalize(recipient, log_id, unsubscribe)

    def _links(self, log_id: int | None, unsubscribe: str) -> dict[str, str]:
        """Only the links the content uses: a name the templates never mention cannot change
        what they render, and each link costs an HMAC."""
        variables = self.content.variables
        links = {}
        if "mirror_url" in variables:
            links["mirror_url"] = self.links.mirror_url(log_id)
        if "unsubscribe_url" in variables:
            links["unsubscribe_url"] = self.links.unsubscribe_url_for(unsubscribe)
        return links

    def _personalize(self, recipient: Recipient, log_id: int | None,
                     unsubscribe: str) -> RenderedContent:
        context = recipient_context(recipient, delivery_id=self.delivery.id,
                                    delivery_name=self.delivery.name,
                                    links=self._links(log_id, unsubscribe))
        content = self.content.render(context, who=recipient.email)
        if self.props.inline_css and content.html:
            content = RenderedContent(content.subject, inline_css(content.html), content.text)
        return content

    def render(self, target: Target, now: datetime, *, sign: bool = True) -> Message:
        """The message for one target; raises TemplateError/InputError if it cannot be built.

        The compiled path (ADR 0029) writes it when it covers the message's shape and
        vouches for this recipient's values; else the general writer does, with the same bytes.
        """
        recipient = target.recipient
        log_id = target.log_id
        wire = recipient_wire_address(recipient.email)
        unsubscribe = self.links.token(UNSUBSCRIBE, log_id) if self._unsubscribe_link else ""
        message_id = self.message_id(log_id)
        to_name = f"{recipient.first_name} {recipient.last_name}".strip()
        signer = self.signer if sign else None
        compiled = self._compiled(recipient, wire, to_name, log_id, unsubscribe, message_id,
                                  now, body_hash=signer is not None)
        if compiled is not None:
            data, mirror = compiled.data, compiled.mirror
            if signer is not None:
                data = signer.sign(data, now=now, head=compiled.head,
                                   body_hash=compiled.body_hash)
        else:
            content = self._personalize(recipient, log_id, unsubscribe)
            data, html = self._build(content, recipient, wire, to_name, unsubscribe,
                                     message_id, now, sign=sign)
            mirror = None
            if self.mirror and content.html:  # the HTML part's bytes; without one, made apart
                mirror = html if html is not None else decoded_part(content.html,
                                                                    self.charset, "html")
        sender = verp_address(self.links.secret, self._errors_to, log_id)
        return Message(target, data, message_id, wire.address, sender, wire.smtputf8, mirror)

    def fallback_reason(self, parts: Parts, *, utf8_headers: bool = False) -> str | None:
        """Why messages of this shape go through the general writer; None when the compiled
        path writes them (decided once per plan and shape)."""
        shape = self._shape(parts, utf8_headers)
        return shape if isinstance(shape, str) else None

    def _shape(self, parts: Parts, utf8_headers: bool) -> CompiledShape | str:
        key = (parts, utf8_headers)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = compile_shape(
                writer=self._writer, content=self.content, parts=parts,
                utf8_headers=utf8_headers, inline_css=self.props.inline_css,
                mirror=self.mirror)
        return shape

    def _compiled(self, recipient: Recipient, wire: WireAddress, to_name: str, log_id: int,
                  unsubscribe: str, message_id: str, now: datetime, *,
                  body_hash: bool) -> Written | None:
        """The message from the compiled path, or None: the general way."""
        try:
            parts = parts_for(self.props.format, recipient.email_format,
                              has_html=self.content.has_html, has_text=self.content.has_text)
        except InputError:
            return None  # the general way reports it, after any template error
        if not self.compiled_path:
            return None
        shape = self._shape(parts, wire.smtputf8)
        if isinstance(shape, str):
            return None
        links = self._links(log_id, unsubscribe)
        headers: tuple[tuple[str, str], ...] = ()
        if self.props.list_unsubscribe:
            headers = (("List-Unsubscribe", self.links.list_unsubscribe_for(unsubscribe)),)
        return shape.write(recipient=recipient, links=links, to_name=to_name,
                           to_address=wire.address, message_id=message_id, date=now,
                           headers=headers, mirror=self.mirror, body_hash=body_hash)

    def render_proof(self, sample: Recipient, to: str, number: int,
                     now: datetime) -> tuple[bytes, WireAddress]:
        """Proof #number: the content personalized for `sample`, addressed to `to`.

        Links in proofs are inactive (they point to .../proof, which serves no page).
        """
        wire = wire_address(to)
        content = self.personalize(sample, None)
        content = RenderedContent(f"Proof #{number} {content.subject}", content.html,
                                  content.text)
        message_id = (f"<proof.{number}.{self.delivery.id}.{self.delivery.salt}"
                      f"@{self._from_domain}>")
        return self._compose(content, sample, wire, "", None, message_id, now), wire

    def _compose(self, content: RenderedContent, recipient: Recipient, wire: WireAddress,
                 to_name: str, log_id: int | None, message_id: str, now: datetime, *,
                 sign: bool = True) -> bytes:
        unsubscribe = self.links.token(UNSUBSCRIBE, log_id) if self.props.list_unsubscribe else ""
        data, _html = self._build(content, recipient, wire, to_name, unsubscribe, message_id,
                                  now, sign=sign)
        return data

    def _build(self, content: RenderedContent, recipient: Recipient, wire: WireAddress,
               to_name: str, unsubscribe: str, message_id: str, now: datetime, *,
               sign: bool) -> tuple[bytes, bytes | None]:
        """(the message, the decoded bytes of its HTML part if it has one)."""
        headers: tuple[tuple[str, str], ...] = ()
        if self.props.list_unsubscribe:  # List-Unsubscribe-Post follows, with the shared ones
            headers = (("List-Unsubscribe", self.links.list_unsubscribe_for(unsubscribe)),)
        parts = parts_for(self.props.format, recipient.email_format,
                          has_html=self.content.has_html, has_text=self.content.has_text)
        data, html = self._writer.write(
            content=content, parts=parts, to_name=to_name, to_address=wire.address,
            message_id=message_id, date=now, headers=headers, utf8_headers=wire.smtputf8)
        if sign and self.signer is not None:
            data = self.signer.sign(data, now=now)  # t= is the Date: the render time
        return data, html

    def message_id(self, log_id: int) -> str:
        return make_message_id(log_id=log_id, delivery_id=self.delivery.id,
                               secret=self.links.secret, domain=self._from_domain)

    # What every message of the delivery shares, made on first use (the plan is immutable).

    @cached_property
    def _writer(self) -> MessageWriter:
        """From, Reply-To and the extra headers, written once for all messages."""
        extra = self.extra_headers
        if self.props.list_unsubscribe:
            extra = (("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"), *extra)
        reply_to_name, reply_to = split_mailbox(self.reply_to)
        return MessageWriter(from_name=self.from_name, from_address=_wire(self.from_address),
                             reply_to=_wire(reply_to), reply_to_name=reply_to_name,
                             extra=extra, charset=self.charset)

    @cached_property
    def _shapes(self) -> dict[tuple[Parts, bool], CompiledShape | str]:
        """The compiled shapes (or the reasons there are none), made on first use."""
        return {}

    @cached_property
    def _errors_to(self) -> str:
        """The errors-to address in its wire form (InputError, not kept, when invalid)."""
        return wire_address(self.errors_to).address

    @cached_property
    def _unsubscribe_link(self) -> bool:
        """Whether messages need the unsubscribe token (header or content)."""
        return self.props.list_unsubscribe or "unsubscribe_url" in self.content.variables

    @cached_property
    def _from_domain(self) -> str:
        """The domain of Message-IDs: the From domain, as A-labels when international."""
        return _ascii_domain(self.from_address)

    def qualified(self, outcome: Outcome) -> Outcome:
        """The outcome with type and reason from the qualification rules (DESIGN.md §5).

        A soft failure is tried again (also a 5xx the rules call soft, such as mailbox full);
        hard, ignored and undefined ones are final. Connection faults keep their own verdict.
        """
        if outcome.reply is None or outcome.verdict is Verdict.SENT:
            return outcome
        verdict = qualify_smtp_reply(outcome.reply.code, outcome.reply.text, self.rules)
        kind = Verdict.DEFERRED if verdict.failure_type is FailureType.SOFT else Verdict.FAILED
        return Outcome(kind, outcome.reply, verdict.failure_type, verdict.reason,
                       outcome.detail, to_qualify=verdict.rule_id is None)

    def settle(self, message: Message, outcome: Outcome, now: datetime) -> LogUpdate:
        """The log update that records `outcome` for `message`."""
        outcome = self.qualified(outcome)
        attempts = message.target.attempts + 1
        failed = LogUpdate(
            log_id=message.target.log_id, status=LogStatus.FAILED, attempts=attempts,
            next_attempt_at=None, failure_type=outcome.failure_type or FailureType.UNDEFINED,
            failure_reason=outcome.reason, detail=outcome.detail,
            # Only a relay's reply is a reply: a connection fault says nothing about the
            # address (its text stays in `detail`), so it must not count against it.
            smtp_reply=str(outcome.reply) if outcome.reply else "",
            message_id=message.message_id, to_qualify=outcome.to_qualify)
        if outcome.verdict is Verdict.SENT:
            mirrored = message.mirror_html is not None
            return replace(
                failed, status=LogStatus.SENT, failure_type=None, failure_reason=None,
                sent_at=now, size=len(message.data),
                sha256=hashlib.sha256(message.data).hexdigest(),
                archive_data=message.data if self.archive else None,
                mirror_html=message.mirror_html,
                mirror_until=now + self.resource_validity if mirrored else None)
        retry_at = now + self.retry.delay(attempts)
        if outcome.verdict is Verdict.DEFERRED and self.retry.may_retry(attempts) \
                and retry_at < self.valid_until:
            return replace(failed, status=LogStatus.PENDING, next_attempt_at=retry_at,
                           failure_type=outcome.failure_type)
        return failed

    def unrenderable(self, target: Target, error: Exception) -> LogUpdate:
        """A target whose message cannot be built fails alone (hard: retrying cannot help)."""
        return LogUpdate(
            log_id=target.log_id, status=LogStatus.FAILED, attempts=target.attempts,
            next_attempt_at=None, failure_type=FailureType.HARD,
            failure_reason=FailureReason.UNDEFINED, detail=f"message not built: {error}",
        )


def make_plan(delivery: Delivery, *, defaults: DefaultsSettings, sending: SendingSettings,
              archive_available: bool, links: Links, resource_validity_days: float = 30.0,
              signers: dict[str, DkimSigner] | None = None,
              rules: Sequence[Rule] | None = None,
              templates: TemplateLimits | None = None) -> Plan:
    """Resolve a delivery's properties against the platform defaults and compile its content.

    Raises InputError (or TemplateError) when a property cannot be used.
    """
    props = delivery.properties
    content = compile_content(subject=props.subject, html=props.html, text=props.text,
                              limits=templates)
    retry = RetryPolicy(
        max_retries=props.max_retries if props.max_retries is not None else defaults.max_retries,
        retry_period=timedelta(minutes=props.retry_period_minutes
                               or defaults.retry_period_minutes),
        validity=timedelta(days=props.validity_days or defaults.validity_days),
        quick_retries=sending.quick_retries,
        quick_delay=timedelta(seconds=sending.quick_retry_seconds),
    )
    from_address = props.from_address or defaults.from_address
    return Plan(
        delivery=delivery, props=props, content=content, charset=charset_for(props.charset),
        from_name=props.from_name or defaults.from_name,
        from_address=from_address,
        reply_to=props.reply_to or defaults.reply_to,
        errors_to=props.errors_to or defaults.errors_to,
        archive=props.email_bcc and archive_available,
        retry=retry,
        links=Links(links.base_url, links.secret, links.unsubscribe_mailto
                    or f"unsubscribe@{_ascii_domain(from_address).lower()}"),
        extra_headers=parse_extra_headers(props.extra_headers),
        resource_validity=timedelta(days=props.resource_validity_days
                                    or resource_validity_days),
        signer=(signers or {}).get(_ascii_domain(from_address).lower()),  # keys: A-labels
        rules=tuple(rules) if rules else default_rules(),
    )


def _wire(address: str) -> str:
    """A platform address in its header form (A-label domain); left as is when invalid
    (analysis reports it)."""
    if not address:
        return address
    try:
        return wire_address(address).address
    except InputError:
        return address


def _ascii_domain(address: str) -> str:
    """The domain of a platform address as headers carry it: as given when it is ASCII, else
    the A-label form the From header has (`_wire`); left as is when invalid (analysis reports
    it)."""
    domain = address.rpartition("@")[2]
    return domain if domain.isascii() else _wire(address).rpartition("@")[2]


@dataclass(frozen=True)
class Planner:
    """Makes the plan of any delivery from the instance settings (built once, in wiring)."""

    defaults: DefaultsSettings
    sending: SendingSettings
    links: Links
    archive_available: bool
    resource_validity_days: float = 30.0
    signers: dict[str, DkimSigner] | None = None
    rules: Callable[[], Sequence[Rule]] | None = None  # the rules table, read per plan
    templates: TemplateLimits | None = None  # None: the defaults

    def __call__(self, delivery: Delivery) -> Plan:
        return make_plan(delivery, defaults=self.defaults, sending=self.sending,
                         archive_available=self.archive_available, links=self.links,
                         resource_validity_days=self.resource_validity_days,
                         signers=self.signers, rules=self.rules() if self.rules else None,
                         templates=self.templates)
