"""A delivery made ready to send: resolved properties, compiled content, pure steps.

`Plan.render()` turns one target into the bytes of its message; `Plan.settle()` turns the outcome
of one attempt into the log update (sent, failed, or pending again with the time of the retry).
Both are pure: the clock arrives as `now`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from postroom.compose.mime import HeaderValues, build_message, make_message_id, parts_for
from postroom.compose.personalize import CompiledContent, compile_content, recipient_context
from postroom.domain.models import Delivery, LogUpdate, Target
from postroom.domain.outcomes import FailureType, Outcome, Verdict
from postroom.domain.properties import Properties
from postroom.domain.states import LogStatus
from postroom.settings import DefaultsSettings, SendingSettings

__all__ = ["Message", "Plan", "RetryPolicy", "make_plan"]


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


@dataclass(frozen=True, slots=True)
class Message:
    target: Target
    data: bytes
    message_id: str


@dataclass(frozen=True)
class Plan:
    delivery: Delivery
    props: Properties
    content: CompiledContent
    from_name: str
    from_address: str
    reply_to: str
    errors_to: str
    archive: bool
    retry: RetryPolicy

    @property
    def valid_until(self) -> datetime:
        start = self.delivery.started_at or self.delivery.analyzed_at or self.delivery.created_at
        return start + self.retry.validity

    def render(self, target: Target, now: datetime) -> Message:
        """The message for one target; raises TemplateError/InputError if it cannot be built."""
        recipient = target.recipient
        context = recipient_context(
            recipient, delivery_id=self.delivery.id, delivery_name=self.delivery.name
        )
        content = self.content.render(context, who=recipient.email)
        parts = parts_for(self.props.format, recipient.email_format,
                          has_html=self.content.has_html, has_text=self.content.has_text)
        message_id = make_message_id(
            log_id=target.log_id, delivery_id=self.delivery.id, salt=self.delivery.salt,
            domain=self.from_address.rpartition("@")[2],
        )
        to_name = f"{recipient.first_name} {recipient.last_name}".strip()
        headers = HeaderValues(
            from_name=self.from_name, from_address=self.from_address, to_name=to_name,
            to_address=recipient.email, reply_to=self.reply_to, subject=content.subject,
            message_id=message_id, date=now,
        )
        return Message(target, build_message(content=content, parts=parts, headers=headers),
                       message_id)

    def settle(self, message: Message, outcome: Outcome, now: datetime) -> LogUpdate:
        """The log update that records `outcome` for `message`."""
        attempts = message.target.attempts + 1
        reply = outcome.text
        if outcome.verdict is Verdict.SENT:
            return LogUpdate(
                log_id=message.target.log_id, status=LogStatus.SENT, attempts=attempts,
                next_attempt_at=None, smtp_reply=reply, message_id=message.message_id,
                sent_at=now, size=len(message.data),
                sha256=hashlib.sha256(message.data).hexdigest(),
                archive_data=message.data if self.archive else None,
            )
        if outcome.verdict is Verdict.DEFERRED:
            retry_at = now + self.retry.delay(attempts)
            if attempts <= self.retry.max_retries and retry_at < self.valid_until:
                return LogUpdate(
                    log_id=message.target.log_id, status=LogStatus.PENDING, attempts=attempts,
                    next_attempt_at=retry_at, failure_type=outcome.failure_type,
                    failure_reason=outcome.reason, detail=outcome.detail, smtp_reply=reply,
                )
        return LogUpdate(
            log_id=message.target.log_id, status=LogStatus.FAILED, attempts=attempts,
            next_attempt_at=None, failure_type=outcome.failure_type or FailureType.UNDEFINED,
            failure_reason=outcome.reason, detail=outcome.detail, smtp_reply=reply,
        )

    def unrenderable(self, target: Target, error: Exception) -> LogUpdate:
        """A target whose message cannot be built fails alone (hard: retrying cannot help)."""
        return LogUpdate(
            log_id=target.log_id, status=LogStatus.FAILED, attempts=target.attempts,
            next_attempt_at=None, failure_type=FailureType.HARD, failure_reason=None,
            detail=f"message not built: {error}",
        )


def make_plan(delivery: Delivery, *, defaults: DefaultsSettings, sending: SendingSettings,
              archive_available: bool) -> Plan:
    """Resolve a delivery's properties against the platform defaults and compile its content."""
    props = delivery.properties
    content = compile_content(subject=props.subject, html=props.html, text=props.text)
    retry = RetryPolicy(
        max_retries=props.max_retries if props.max_retries is not None else defaults.max_retries,
        retry_period=timedelta(minutes=props.retry_period_minutes
                               or defaults.retry_period_minutes),
        validity=timedelta(days=props.validity_days or defaults.validity_days),
        quick_retries=sending.quick_retries,
        quick_delay=timedelta(seconds=sending.quick_retry_seconds),
    )
    return Plan(
        delivery=delivery, props=props, content=content,
        from_name=props.from_name or defaults.from_name,
        from_address=props.from_address or defaults.from_address,
        reply_to=props.reply_to or defaults.reply_to,
        errors_to=props.errors_to or defaults.errors_to,
        archive=props.email_bcc and archive_available,
        retry=retry,
    )
