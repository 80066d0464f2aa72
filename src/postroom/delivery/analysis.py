"""Analysis (DESIGN.md §3): check a delivery, resolve its audience, write one log per target.

Blocking problems (no sender, no subject, a template that does not compile or render for some
recipient, Email BCC asked for on an instance without it) fail the analysis before anything is
written. Excluded targets get an `ignored` log with the reason: duplicate, invalid address,
denylisted, in quarantine, opted out. A target whose data the charset cannot represent gets a
`failed` log.

The audience streams in keyset batches; the quarantined and denylisted addresses are read once;
the logs are written in bulk in one transaction. Whether a target's message can be built is
proven from its values where the content allows it (`delivery.screening`), and found by
building it (`Plan.render`) everywhere else: the logs are those a full render gives.
"""

from __future__ import annotations

import json
import json.scanner
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any, Protocol

from postroom.compose.charsets import first_unrepresentable
from postroom.compose.mime import EncodingError
from postroom.compose.personalize import static_text, template_literals
from postroom.delivery.audience import COLUMNS, matcher, parse_filter
from postroom.delivery.plan import Plan
from postroom.delivery.screening import plain_address, screen
from postroom.domain.addresses import normalize_address, split_mailbox
from postroom.domain.models import Delivery, EmailFormat, Recipient, Target
from postroom.domain.outcomes import FailureReason, FailureType
from postroom.domain.properties import MessageFormat, MirrorMode
from postroom.domain.states import DeliveryState, LogStatus
from postroom.errors import InputError, PostroomError

__all__ = ["AnalysisReport", "AudienceRow", "LogRow", "analyze"]

MAX_ERRORS = 10  # distinct render problems reported before analysis stops
# Targets whose message cannot be built that analysis renders (about 1 ms each) before it
# stops with the counts so far: a typo in the content of a million-recipient delivery is
# reported in about a second, not after rendering every target.
MAX_FAILED_RENDERS = 1000

# One target as the store reads it: id, email, first_name, last_name, email_format, opted_out
# (truthy), custom fields (their JSON text, or a dict), then the store's two sort keys.
AudienceRow = tuple[int, str, str, str, str, Any, Any, str, int]
# One log as analysis writes it: NewLog's fields in order (`NewLog(*row)` is the record). Plain
# tuples, because a dataclass per log costs a tenth of the time analysis may take.
LogRow = tuple[int | None, str, LogStatus, FailureReason | None, str, FailureType | None]


class AnalysisStore(Protocol):
    def move_delivery(self, delivery_id: int, target: DeliveryState, now: datetime, *,
                      error: str | None = None) -> Delivery: ...

    def audience_rows(self, delivery: Delivery) -> Iterator[Sequence[AudienceRow]]:
        """The delivery's targets in (email_key, position) order, in batches: equal addresses
        come out next to each other."""
        ...

    def held_addresses(self) -> dict[str, str]:
        """Address → status, for the addresses that are denylisted or in quarantine."""
        ...

    def replace_logs(self, delivery_id: int, logs: Iterable[LogRow], now: datetime) -> None:
        """Write the delivery's logs afresh in one transaction; nothing if `logs` raises."""
        ...


@dataclass
class AnalysisReport:
    delivery_id: int
    ok: bool = False
    targets: int = 0
    pending: int = 0
    failed: int = 0  # recipients whose data the charset cannot represent
    excluded: Counter[FailureReason] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    # Recipients whose message cannot be rendered, by distinct problem (the text without the
    # recipient), with the first recipient it was seen for: one error line per problem.
    render_problems: Counter[str] = field(default_factory=Counter)
    render_examples: dict[str, str] = field(default_factory=dict)

    def render_errors(self) -> list[str]:
        return [f"{problem} — {count} recipient{'s' if count != 1 else ''}, for example "
                f"{self.render_examples[problem]}"
                for problem, count in self.render_problems.items()]

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
    plain = {"from_name": plan.from_name, "reply_to": split_mailbox(plan.reply_to)[0],
             **{f"header {n}": v for n, v in plan.extra_headers}}
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
        # Reply-To may carry a display name, `Name <address>` (the others have their own)
        address = split_mailbox(value)[1] if name == "reply_to" else value
        try:
            normalize_address(address)
        except InputError as exc:
            problems.append(f"{name}: {value!r} is not a valid address: {exc}")
            continue
        local = address.rpartition("@")[0]
        if not local.isascii():
            # It is in every message's headers (errors_to: in every MAIL FROM), and a server
            # without SMTPUTF8 cannot take it: most recipients' messages could not be built.
            problems.append(f"{name}: {value!r} has a non-ASCII local part ({local!r}); "
                            "use an ASCII address (an internationalized domain is fine)")
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


_FORMATS = {str(f): f for f in EmailFormat}
# json.loads without its Python wrapping (C); see _fields.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    json.JSONDecoder())  # type: ignore[arg-type]
_DOUBLE = (FailureReason.DOUBLE, "duplicate address in this delivery")
_HELD = {"denylisted": (FailureReason.DENYLISTED, "the address is on the denylist"),
         "quarantine": (FailureReason.QUARANTINE, "the address is in quarantine")}
_OPTED_OUT = (FailureReason.OPTED_OUT, "the recipient opted out")


def _fields(raw: Any) -> dict[str, Any]:
    """The custom fields from their JSON text, as `dict(json.loads(raw) or {})` gives them."""
    value = raw
    if type(raw) is str:
        try:
            value, end = _SCAN(raw, 0)
        except Exception:  # no JSON there (StopIteration), or bad JSON: json.loads says which
            end = -1
        if end != len(raw):  # also leading or trailing text: as json.loads does
            value = json.loads(raw)
    return value if type(value) is dict else dict(value or {})


def _logs(store: AnalysisStore, plan: Plan, report: AnalysisReport,
          now: datetime) -> Iterator[LogRow]:
    """One log per target, in audience order. Raises _Abort when some target cannot be
    rendered, after the whole audience, with one error per distinct problem and the number
    of targets it affects (or at once past MAX_ERRORS distinct problems), and when a
    filter names a field that no target has.

    The checks and their order are those of a full render per target; a target whose message
    `delivery.screening` proves buildable is not rendered (the hot path: a million of them)."""
    delivery = plan.delivery
    wanted = matcher(delivery.audience.filters) if delivery.audience.filters else None
    # Filter fields that are no column: each must be some target's custom field, else the
    # filter names a field no recipient has (a typo) and analysis fails naming it.
    unseen = {parse_filter(f).field for f in delivery.audience.filters} - set(COLUMNS)
    known: set[str] = set()
    held = store.held_addresses()
    screened = screen(plan)  # None: every target is rendered in full
    shape_of = screened.shape if screened is not None else None
    parse = wanted is not None or (screened is not None and bool(screened.custom))
    proven: set[Hashable] = set()  # shapes whose first plain target rendered
    domains: dict[str, bool] = {}  # plain_address's verdicts on domains
    held_status, format_of = held.get, _FORMATS.get  # in locals: the loop runs a million times
    previous_key: str | None = None
    targets = pending = 0
    try:
        for batch in store.audience_rows(delivery):
            for (recipient_id, email, first_name, last_name, format_name, opted, raw,
                 _sort_key, _position) in batch:
                email_format = format_of(format_name) or EmailFormat(format_name)
                fields = _fields(raw) if parse else None
                recipient: Recipient | None = None
                if wanted is not None:
                    if unseen and fields:
                        unseen.difference_update(fields)
                        known.update(fields)
                    recipient = Recipient(recipient_id, email, first_name, last_name,
                                          email_format, bool(opted), fields or {},
                                          held_status(email, "valid"))
                    if not wanted(recipient):
                        continue
                targets += 1
                key = email.lower()
                exclusion: tuple[FailureReason, str] | None = None
                plain = False
                if key == previous_key:
                    exclusion = _DOUBLE
                elif not (plain := plain_address(email, domains)):
                    try:
                        normalize_address(email)
                    except InputError as exc:
                        exclusion = (FailureReason.INVALID, str(exc))
                previous_key = key
                if exclusion is None:
                    exclusion = _HELD.get(held_status(email, "")) or (
                        _OPTED_OUT if opted else None)
                if exclusion is not None:
                    report.excluded[exclusion[0]] += 1
                    yield (recipient_id, email, LogStatus.IGNORED, *exclusion, None)
                    continue
                shape = None if shape_of is None or not plain else shape_of(
                    email, first_name, last_name, email_format, fields or {})
                if shape is not None and shape in proven:
                    pending += 1
                    yield (recipient_id, email, LogStatus.PENDING, None, "", None)
                    continue
                if recipient is None:
                    recipient = Recipient(recipient_id, email, first_name, last_name,
                                          email_format, bool(opted),
                                          _fields(raw) if fields is None else fields,
                                          held_status(email, "valid"))
                log = _rendered(plan, recipient, report, now)
                if log is None:
                    continue
                if log[2] is LogStatus.PENDING:
                    pending += 1
                    if shape is not None:
                        proven.add(shape)  # its first plain target stands for the others
                yield log
    finally:
        report.targets += targets
        report.pending += pending
    for name in sorted(unseen):
        filters = ", ".join(repr(f) for f in delivery.audience.filters
                            if parse_filter(f).field == name)
        report.errors.append(
            f"filter {filters}: no recipient has a field {name!r}; the fields are "
            + ", ".join([*COLUMNS, *sorted(known)[:30]]))
    report.errors.extend(report.render_errors())
    if report.errors:
        raise _Abort


def _rendered(plan: Plan, recipient: Recipient, report: AnalysisReport,
              now: datetime) -> LogRow | None:
    """The target's log from building its message in full (`Plan.render`, as sending will);
    None, with the error reported, when the content cannot be rendered for it."""
    try:
        plan.render(Target(0, 0, recipient), now, sign=False)
    except EncodingError as exc:  # this recipient's data does not fit the charset
        report.failed += 1
        return (recipient.id, recipient.email, LogStatus.FAILED, FailureReason.UNDEFINED,
                f"message not built: {exc}", FailureType.HARD)
    except InputError as exc:
        problem = str(exc).replace(f" for {recipient.email}", "")
        if problem not in report.render_problems and len(report.render_problems) >= MAX_ERRORS:
            report.errors.extend(report.render_errors())
            report.errors.append(f"more than {MAX_ERRORS} distinct problems; analysis "
                                 f"stopped at recipient #{recipient.id}")
            raise _Abort from None
        report.render_problems[problem] += 1
        report.render_examples.setdefault(problem, f"recipient #{recipient.id} "
                                                   f"<{recipient.email}>")
        if report.render_problems.total() >= MAX_FAILED_RENDERS:
            report.errors.extend(report.render_errors())
            report.errors.append(f"analysis stopped after {MAX_FAILED_RENDERS} recipients "
                                 "whose message cannot be built (at recipient "
                                 f"#{recipient.id}): the counts above are those seen so far")
            raise _Abort from None
        return None
    return (recipient.id, recipient.email, LogStatus.PENDING, None, "", None)


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
