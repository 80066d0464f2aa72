"""Analysis (DESIGN.md §3): check a delivery, resolve its audience, write one log per target.

Blocking problems (no sender, no subject, a template that does not compile or render for some
recipient, Email BCC asked for on an instance without it) fail the analysis before anything is
written. Excluded targets get an `ignored` log with the reason: duplicate, invalid address,
opted out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Protocol

from postroom.compose.charsets import first_unrepresentable
from postroom.compose.mime import EncodingError
from postroom.compose.personalize import static_text, template_literals
from postroom.delivery.audience import matcher
from postroom.delivery.plan import Plan
from postroom.domain.addresses import normalize_address
from postroom.domain.models import Delivery, NewLog, Recipient, Target
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.properties import MessageFormat, MirrorMode
from postroom.domain.states import DeliveryState, LogStatus
from postroom.errors import InputError, PostroomError

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
    failed: int = 0  # recipients whose data the charset cannot represent
    excluded: Counter[FailureReason] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "delivery": self.delivery_id,
            "ok": self.ok,
            "targets": self.targets,
            "to_send": self.pending,
            "failed": self.failed,
            "excluded": {reason.label: n for reason, n in sorted(self.excluded.items())},
            "errors": self.errors,
        }


def _charset_problems(plan: Plan) -> list[str]:
    """Static text (outside personalization) that the delivery's charset cannot represent."""
    problems: list[str] = []
    sources = {"subject": plan.props.subject, "html": plan.props.html, "text": plan.props.text}
    for field_name, raw in sources.items():
        source = raw.replace("\r\n", "\n").replace("\r", "\n")  # as the lexer reads it
        for offset, text in chain(static_text(source), template_literals(source)):
            problem = first_unrepresentable(text, plan.charset)
            if problem is not None:
                index = offset + problem.index
                line = source.count("\n", 0, index) + 1
                column = index - (source.rfind("\n", 0, index) + 1) + 1
                problems.append(f"{field_name}: the character {problem.character!r} "
                                f"(U+{ord(problem.character):04X}) at line {line}, column "
                                f"{column} cannot be encoded in {plan.charset.mime}")
                break
    plain = {"from_name": plan.from_name, **{f"header {n}": v for n, v in plan.extra_headers}}
    for field_name, value in plain.items():
        problem = first_unrepresentable(value, plan.charset)
        if problem is not None:
            problems.append(problem.describe(plan.charset, field_name))
    return problems


def _mirror_problems(plan: Plan) -> list[str]:
    mode = plan.props.mirror_mode
    uses_link = "mirror_url" in plan.content.variables
    if uses_link and mode is MirrorMode.NEVER:
        return ["mirror_mode: the content uses mirror_url but mirror_mode is never"]
    if uses_link and mode is MirrorMode.ID_ONLY:
        return ["mirror_mode: id_only pages are reached only from the delivery log; remove "
                "mirror_url from the content or choose auto or force"]
    if plan.mirror and not plan.content.has_html:
        return ["mirror_mode: a mirror page needs HTML content (also for text-only sends)"]
    return []


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
    if props.email_bcc and not archive_available:
        problems.append(
            "email_bcc: the delivery asks for Email BCC, but this instance has no archive "
            "address (the administrator sets archive.enabled and archive.bcc_address)"
        )
    return problems + _charset_problems(plan) + _mirror_problems(plan)


def _logs(store: AnalysisStore, plan: Plan, report: AnalysisReport,
          now: datetime) -> Iterator[NewLog]:
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
        if reason is None and recipient.address_status == "denylisted":
            reason, detail = FailureReason.DENYLISTED, "the address is on the denylist"
        if reason is None and recipient.address_status == "quarantine":
            reason, detail = FailureReason.QUARANTINE, "the address is in quarantine"
        if reason is None and recipient.opted_out:
            reason, detail = FailureReason.OPTED_OUT, "the recipient opted out"
        if reason is not None:
            report.excluded[reason] += 1
            yield NewLog(recipient.id, recipient.email, LogStatus.IGNORED, reason, detail)
            continue
        try:
            plan.render(Target(0, 0, recipient), now, sign=False)
        except EncodingError as exc:  # this recipient's data does not fit the charset
            report.failed += 1
            yield NewLog(recipient.id, recipient.email, LogStatus.FAILED,
                         FailureReason.UNDEFINED, f"message not built: {exc}",
                         FailureType.HARD)
            continue
        except InputError as exc:
            report.errors.append(f"recipient #{recipient.id} <{recipient.email}>: {exc}"
                                 if recipient.email not in str(exc) else str(exc))
            if len(report.errors) >= MAX_ERRORS:
                raise _Abort from None
            continue
        report.pending += 1
        yield NewLog(recipient.id, recipient.email, LogStatus.PENDING)
    if report.errors:
        raise _Abort


class _Abort(Exception):
    """Rolls the log writing back when some recipient cannot be rendered."""


def analyze(store: AnalysisStore, delivery_id: int, *, planner: Callable[[Delivery], Plan],
            archive_available: bool, now: datetime) -> AnalysisReport:
    """Analyze a delivery; its state ends `ready` or `failed` (with the errors kept)."""
    report = AnalysisReport(delivery_id)
    delivery = store.move_delivery(delivery_id, DeliveryState.ANALYZING, now)
    try:
        plan = planner(delivery)
        report.errors = static_checks(plan, archive_available=archive_available)
        if not report.errors:
            store.replace_logs(delivery_id, _logs(store, plan, report, now), now)
    except _Abort:
        pass
    except PostroomError as exc:
        report.errors.append(str(exc))
    except BaseException:
        store.move_delivery(delivery_id, DeliveryState.FAILED, now,
                            error="analysis interrupted")
        raise
    if report.errors:
        report.pending = report.failed = 0
        store.move_delivery(delivery_id, DeliveryState.FAILED, now,
                            error="\n".join(report.errors))
        return report
    report.ok = True
    store.move_delivery(delivery_id, DeliveryState.READY, now, error="")
    return report
