"""Analysis (DESIGN.md §3): check a delivery, resolve its audience, write one log per target.

Blocking problems (no sender, no subject, a template that does not compile or render for some
recipient, Email BCC asked for on an instance without it) fail the analysis before anything is
written. Excluded targets get an `ignored` log with the reason: duplicate, invalid address,
opted out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from postroom.compose.mime import parts_for
from postroom.compose.personalize import recipient_context
from postroom.delivery.audience import matcher
from postroom.delivery.plan import Plan, make_plan
from postroom.domain.models import Delivery, NewLog, Recipient
from postroom.domain.outcomes import FailureReason
from postroom.domain.properties import MessageFormat
from postroom.domain.states import DeliveryState, LogStatus
from postroom.errors import InputError, PostroomError, TemplateError
from postroom.recipients.csv_rows import normalize_address
from postroom.settings import DefaultsSettings, SendingSettings

__all__ = ["AnalysisReport", "analyze"]

MAX_ERRORS = 10


class AnalysisStore(Protocol):
    def get_delivery(self, delivery_id: int) -> Delivery: ...
    def move_delivery(self, delivery_id: int, target: DeliveryState, now: datetime, *,
                      error: str | None = None) -> Delivery: ...
    def iter_audience(self, delivery: Delivery, batch_size: int = 1000) -> Iterator[Recipient]: ...
    def replace_logs(self, delivery_id: int, logs: Iterator[NewLog], now: datetime) -> None: ...


@dataclass
class AnalysisReport:
    delivery_id: int
    ok: bool = False
    targets: int = 0
    pending: int = 0
    excluded: Counter[FailureReason] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "delivery": self.delivery_id,
            "ok": self.ok,
            "targets": self.targets,
            "to_send": self.pending,
            "excluded": {reason.label: n for reason, n in sorted(self.excluded.items())},
            "errors": self.errors,
        }


def static_checks(plan: Plan, *, archive_available: bool) -> list[str]:
    """Problems with the delivery itself, before looking at any recipient."""
    problems: list[str] = []
    props = plan.props
    if not props.subject.strip():
        problems.append("subject: the delivery has no subject")
    for name, value in (("from_address", plan.from_address), ("errors_to", plan.errors_to),
                        ("reply_to", plan.reply_to)):
        if name == "reply_to" and not value:
            continue
        try:
            normalize_address(value)
        except InputError as exc:
            problems.append(f"{name}: {value!r} is not a valid address: {exc}")
    if not plan.content.has_html and not plan.content.has_text:
        problems.append("content: the delivery has neither HTML nor text content")
    if props.format is MessageFormat.HTML and not plan.content.has_html:
        problems.append("format: html was chosen but the delivery has no HTML content")
    if props.charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        problems.append(f"charset: {props.charset!r} is not supported yet (use utf-8)")
    if props.email_bcc and not archive_available:
        problems.append(
            "email_bcc: the delivery asks for Email BCC, but this instance has no archive "
            "address (the administrator sets archive.enabled and archive.bcc_address)"
        )
    return problems


def _logs(store: AnalysisStore, plan: Plan, report: AnalysisReport) -> Iterator[NewLog]:
    delivery = plan.delivery
    wanted = matcher(delivery.audience.filters)
    previous_key: str | None = None
    for recipient in store.iter_audience(delivery):
        if not wanted(recipient):
            continue
        report.targets += 1
        key = recipient.email.lower()
        reason: FailureReason | None = None
        detail = ""
        if key == previous_key:
            reason, detail = FailureReason.DOUBLE, "duplicate address in this delivery"
        else:
            try:
                normalize_address(recipient.email)
            except InputError as exc:
                reason, detail = FailureReason.INVALID, str(exc)
        previous_key = key
        if reason is None and recipient.opted_out:
            reason, detail = FailureReason.OPTED_OUT, "the recipient opted out"
        if reason is not None:
            report.excluded[reason] += 1
            yield NewLog(recipient.id, recipient.email, LogStatus.IGNORED, reason, detail)
            continue
        try:
            context = recipient_context(recipient, delivery_id=delivery.id,
                                        delivery_name=delivery.name)
            plan.content.render(context, who=f"recipient #{recipient.id} <{recipient.email}>")
            parts_for(plan.props.format, recipient.email_format,
                      has_html=plan.content.has_html, has_text=plan.content.has_text)
        except InputError as exc:
            report.errors.append(str(exc))
            if len(report.errors) >= MAX_ERRORS:
                raise _Abort from None
            continue
        report.pending += 1
        yield NewLog(recipient.id, recipient.email, LogStatus.PENDING)
    if report.errors:
        raise _Abort


class _Abort(Exception):
    """Rolls the log writing back when some recipient cannot be rendered."""


def analyze(store: AnalysisStore, delivery_id: int, *, defaults: DefaultsSettings,
            sending: SendingSettings, archive_available: bool, now: datetime) -> AnalysisReport:
    """Analyze a delivery; its state ends `ready` or `failed` (with the errors kept)."""
    report = AnalysisReport(delivery_id)
    delivery = store.move_delivery(delivery_id, DeliveryState.ANALYZING, now)
    try:
        plan = make_plan(delivery, defaults=defaults, sending=sending,
                         archive_available=archive_available)
        report.errors = static_checks(plan, archive_available=archive_available)
        if not report.errors:
            store.replace_logs(delivery_id, _logs(store, plan, report), now)
    except _Abort:
        pass
    except TemplateError as exc:
        report.errors.append(str(exc))
    except PostroomError as exc:
        report.errors.append(str(exc))
    except BaseException:
        store.move_delivery(delivery_id, DeliveryState.FAILED, now,
                            error="analysis interrupted")
        raise
    if report.errors:
        report.pending = 0
        store.move_delivery(delivery_id, DeliveryState.FAILED, now,
                            error="\n".join(report.errors))
        return report
    report.ok = True
    store.move_delivery(delivery_id, DeliveryState.READY, now, error="")
    return report
