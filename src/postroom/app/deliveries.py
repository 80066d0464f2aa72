"""Deliveries: create from a template, analyze, start / pause / resume / retry / stop, resend
to failures, the review of in-doubt logs, and the delivery logs."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from postroom.accounts.bcc import check_email_bcc_kept
from postroom.app.context import AppContext
from postroom.delivery.analysis import AnalysisReport, analyze
from postroom.delivery.audience import parse_filter
from postroom.domain.models import ArchiveState, Audience, Delivery, DeliveryLog
from postroom.domain.outcomes import FailureReason
from postroom.domain.states import DeliveryState, LogStatus
from postroom.errors import InputError, StateError
from postroom.recipients.importer import ImportReport, import_csv

__all__ = ["MAX_LOGS", "DeliveryService", "parse_reason"]

MAX_LOGS = 100_000  # delivery logs in one answer


def parse_reason(text: str) -> FailureReason:
    """A failure reason from its code (`1`) or its name (`user unknown`, `user_unknown`)."""
    value = text.strip().lower().replace("_", " ").replace("-", " ")
    for reason in FailureReason:
        if value in (str(reason.value), reason.label):
            return reason
    raise InputError(f"{text!r} is not a failure reason; use a code or a name: "
                     + ", ".join(f"{r.value} ({r.label})" for r in FailureReason))


class DeliveryService:
    def __init__(self, ctx: AppContext):
        self._ctx = ctx

    def list_deliveries(self) -> list[Delivery]:
        return self._ctx.store.list_deliveries()

    def get_delivery(self, delivery_id: int) -> Delivery:
        return self._ctx.store.get_delivery(delivery_id)

    def pending_count(self, delivery_id: int) -> int:
        return sum(n for status, _, _, n in self._ctx.store.log_counts(delivery_id)
                   if status == LogStatus.PENDING)

    def create_delivery(self, template: str, *, name: str | None = None,
                        overrides: dict[str, Any] | None = None,
                        filters: list[str] | None = None,
                        list_file: Path | None = None) -> tuple[Delivery, ImportReport | None]:
        """Copy a template's properties, apply overrides, and set the audience."""
        store, now = self._ctx.store, self._ctx.now
        source = store.get_template(template)
        props = source.properties.override(overrides or {})
        check_email_bcc_kept(was_on=source.properties.email_bcc, now_on=props.email_bcc,
                             where=f"a delivery from template {template!r}")
        for text in filters or []:
            parse_filter(text)
        if filters and list_file:
            raise InputError("choose either filters or a list file for the audience, not both")
        audience = (Audience("list", source=str(list_file)) if list_file
                    else Audience("filter", tuple(filters)) if filters else Audience())
        report: ImportReport | None = None
        if list_file is not None:
            report = import_csv(list_file, store, now=now(), keep_emails=True)
        delivery = store.create_delivery(
            name=name or f"{template} {now():%Y-%m-%d %H:%M}", template_name=template,
            props=props, audience=audience, salt=secrets.token_hex(8), now=now())
        if report is not None:
            ids = store.recipient_ids(report.emails)
            store.set_audience_list(delivery.id, [ids[e] for e in report.emails])
            report.emails.clear()
        return delivery, report

    def analyze(self, delivery_id: int) -> AnalysisReport:
        self._ctx.store.sweep_addresses(self._ctx.now())  # counters reset, mailbox-full releases
        return analyze(self._ctx.store, delivery_id, planner=self._ctx.planner,
                       archive_available=self._ctx.settings.archive.enabled,
                       now=self._ctx.now())

    def start(self, delivery_id: int, *,
              on_analyzed: Callable[[AnalysisReport], None] | None = None) -> Delivery:
        """Analyze if needed and move the delivery to `sending`, for workers to pick up."""
        store = self._ctx.store
        delivery = store.get_delivery(delivery_id)
        if delivery.state in (DeliveryState.EDITING, DeliveryState.FAILED):
            report = self.analyze(delivery_id)
            if on_analyzed is not None:
                on_analyzed(report)
            if not report.ok:
                raise InputError(f"analysis of delivery #{delivery_id} failed:\n"
                                 + "\n".join(report.errors))
            delivery = store.get_delivery(delivery_id)
        if delivery.state is DeliveryState.READY:
            store.move_delivery(delivery_id, DeliveryState.SENDING, self._ctx.now())
        elif delivery.state is not DeliveryState.SENDING:
            raise StateError(f"delivery #{delivery_id} is {delivery.state}; "
                             + ("resume it first" if delivery.state is DeliveryState.PAUSED
                                else "it cannot be sent"))
        return store.get_delivery(delivery_id)

    def pause(self, delivery_id: int) -> Delivery:
        return self._ctx.store.move_delivery(delivery_id, DeliveryState.PAUSED, self._ctx.now())

    def resume(self, delivery_id: int) -> Delivery:
        """Send again; messages a relay fault held back are due at once (the fault that
        paused the delivery was fixed, or the operator wants to see)."""
        store = self._ctx.store
        delivery = store.move_delivery(delivery_id, DeliveryState.SENDING, self._ctx.now(),
                                       error="")
        store.retry_now(delivery_id, self._ctx.now(), relay_only=True)
        return delivery

    def retry(self, delivery_id: int) -> int:
        """`deliveries retry`: messages waiting for a later attempt because no connection
        could be had (relay faults, connection faults, hourly limits) are due now; returns
        how many. Sent, failed, cancelled and in-review logs are never touched, nor ones a
        live sender holds, nor ones a recipient's server deferred."""
        self._ctx.store.get_delivery(delivery_id)
        return self._ctx.store.retry_now(delivery_id, self._ctx.now())

    def stop(self, delivery_id: int) -> Delivery:
        store = self._ctx.store
        delivery = store.move_delivery(delivery_id, DeliveryState.STOPPED, self._ctx.now())
        store.expire_pending(delivery_id, self._ctx.now(), status=LogStatus.CANCELLED,
                             reason=None, detail="the delivery was stopped")
        return delivery

    def resolve_review(self, delivery_id: int, *, resend: bool) -> int:
        """Logs set aside as in doubt (at-most-once): send them again, or count them failed.

        A delivery waits in `sending` while logs are in review; once none is left and nothing
        is pending it finishes.
        """
        store = self._ctx.store
        count = store.resolve_review(delivery_id, resend=resend, now=self._ctx.now())
        if (store.get_delivery(delivery_id).state is DeliveryState.SENDING
                and store.next_due(delivery_id) is None
                and not store.review_waiting(delivery_id)):
            with contextlib.suppress(StateError):
                store.move_delivery(delivery_id, DeliveryState.FINISHED, self._ctx.now())
        return count

    def resend(self, delivery_id: int, *, reasons: list[int] | None = None,
               name: str | None = None) -> Delivery:
        """A follow-up delivery (same content and settings) to the recipients whose logs
        failed (with one of `reasons`) and whose address is not in quarantine now."""
        store = self._ctx.store
        source = store.get_delivery(delivery_id)
        targets = store.failed_recipients(delivery_id, reasons)
        if not targets:
            raise InputError(f"delivery #{delivery_id} has no failed recipient to resend to"
                             + (f" with reasons {reasons}" if reasons else ""))
        delivery = store.create_delivery(
            name=name or f"{source.name} (resend)", template_name=source.template_name,
            props=source.properties, audience=Audience("list", source=f"resend of #{source.id}"),
            salt=secrets.token_hex(8), now=self._ctx.now())
        store.set_audience_list(delivery.id, targets)
        return delivery

    def logs(self, delivery_id: int, *, status: str | None = None,
             reason: str | int | None = None, archive: str | None = None,
             email: str | None = None, limit: int = 100, offset: int = 0) -> list[DeliveryLog]:
        """A delivery's logs; a status, reason (code or name) or archive state that does not
        exist is refused with the valid ones, rather than giving an empty list."""
        self._ctx.store.get_delivery(delivery_id)
        if not 1 <= limit <= MAX_LOGS or offset < 0:
            raise InputError(f"--limit {limit} --offset {offset}: give a limit of 1 to "
                             f"{MAX_LOGS} and an offset of 0 or more")
        if status is not None and status not in set(LogStatus):
            raise InputError(f"--status {status!r}: not a log status; use one of "
                             + ", ".join(LogStatus))
        archives = [*ArchiveState, "none"]
        if archive is not None and archive not in archives:
            raise InputError(f"--archive {archive!r}: not an archive state; use one of "
                             + ", ".join(archives))
        code = None if reason is None else parse_reason(str(reason)).value
        return self._ctx.store.list_logs(delivery_id, status=status, reason=code,
                                         archive=archive, email=email, limit=limit,
                                         offset=offset)
