"""`Postroom`: the application services of one instance, built by `postroom.wiring.build()`.

Each attribute is one concern's service (`postroom.deliveries.create_delivery(...)`); the
attributes and their public methods are exactly the keys of `postroom.accounts.policy.REQUIRED`
(a test holds them together). `store`, `settings` and `clock` stay reachable for wiring, tests
and benchmarks; the surfaces (CLI, web) go through the services.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from postroom.accounts.actor import Actor
from postroom.accounts.audit import AuditLog
from postroom.accounts.guard import GuardedView, guarded
from postroom.accounts.service import AccountsService
from postroom.app.archive import ArchiveService
from postroom.app.context import AppContext
from postroom.app.deliveries import DeliveryService
from postroom.app.links import LinkService
from postroom.app.operations import OperationsService
from postroom.app.proofs import ProofService
from postroom.app.quarantine import QuarantineService
from postroom.app.recipients import RecipientService
from postroom.app.reports import ReportService
from postroom.app.sending import SendingService
from postroom.app.templates import TemplateService
from postroom.delivery.plan import Planner
from postroom.inbound.service import BounceService
from postroom.settings import Settings
from postroom.storage.accounts import AccountStore
from postroom.storage.sql import SqlStore

__all__ = ["SERVICES", "Postroom"]

SERVICES = ("recipients", "templates", "deliveries", "sending", "proofs", "links", "archive",
            "bounces", "quarantine", "reports", "operations", "accounts")


class Postroom:
    """The services over one `AppContext`; `clock` can be moved (tests) for all at once."""

    def __init__(self, ctx: AppContext):
        self.context = ctx
        self.recipients = RecipientService(ctx)
        self.templates = TemplateService(ctx)
        self.deliveries = DeliveryService(ctx)
        self.sending = SendingService(ctx, self.deliveries)
        self.proofs = ProofService(ctx)
        self.links = LinkService(ctx)
        self.archive = ArchiveService(ctx)
        self.bounces = BounceService(
            ctx.store, secret=ctx.planner.links.secret,
            clock=lambda: ctx.clock(),  # read at each call: tests move `clock`
            attribution_window=timedelta(days=ctx.settings.quarantine.attribution_window_days))
        self.quarantine = QuarantineService(ctx)
        self.operations = OperationsService(ctx)
        self.reports = ReportService(ctx, self.operations)
        self.accounts = AccountsService(AccountStore(ctx.store.engine),
                                        clock=lambda: ctx.clock())
        self.audit_log = AuditLog(self.accounts.store, lambda: ctx.clock())

    def acting_as(self, actor: Actor) -> GuardedView:
        """This container as `actor` may use it: each service call checked against the
        permission table, run as the actor, and audited (accounts/guard.py)."""
        return guarded(self, actor, self.audit_log)

    @property
    def store(self) -> SqlStore:
        return self.context.store

    @property
    def settings(self) -> Settings:
        return self.context.settings

    @property
    def planner(self) -> Planner:
        return self.context.planner

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.context.clock

    @clock.setter
    def clock(self, clock: Callable[[], datetime]) -> None:
        self.context.clock = clock

    def close(self) -> None:
        """Release the database connections."""
        self.context.store.close()
