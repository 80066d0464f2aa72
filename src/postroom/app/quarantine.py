"""Address statuses: the quarantine and the denylist; release (one by one or in bulk by domain
and time window) and denylisting, both an operator's decision."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from postroom.app.context import AppContext
from postroom.bounces.quarantine import AddressState
from postroom.domain.addresses import normalize_address
from postroom.errors import InputError

__all__ = ["QuarantineService"]

HELD = ("quarantine", "denylisted")
_STATUSES = ("valid", "with_errors", "quarantine", "denylisted")
MAX_LIST = 100_000


class QuarantineService:
    def __init__(self, ctx: AppContext):
        self._ctx = ctx

    def list_addresses(self, *, statuses: Sequence[str] = HELD, domain: str | None = None,
                       since: datetime | None = None, until: datetime | None = None,
                       limit: int = 200) -> list[AddressState]:
        """Addresses in these statuses, latest status change first."""
        unknown = [s for s in statuses if s not in _STATUSES]
        if unknown:
            raise InputError(f"{', '.join(unknown)}: not an address status; use "
                             + ", ".join(_STATUSES))
        if not 1 <= limit <= MAX_LIST:
            raise InputError(f"limit {limit}: give 1 to {MAX_LIST}")
        return self._ctx.store.list_addresses(statuses=statuses,
                                              domain=domain.lower() if domain else None,
                                              since=since, until=until, limit=limit)

    def get_address(self, address: str) -> AddressState | None:
        """One address's status (None: valid, no history); the domain's case does not matter."""
        return self._ctx.store.get_address(normalize_address(address))

    def release_addresses(self, addresses: Sequence[str] = (), *, domain: str | None = None,
                          since: datetime | None = None, until: datetime | None = None,
                          denylisted: bool = False) -> int:
        """Make addresses valid again: the ones named, and with `domain` every address of it
        in quarantine or with errors (denylisted ones too if `denylisted`) whose status
        changed in [since, until). Returns how many were released."""
        chosen = [normalize_address(a) for a in addresses]
        if domain:
            statuses = ["quarantine", "with_errors"] + (["denylisted"] if denylisted else [])
            chosen += [r.address for r in self._ctx.store.list_addresses(
                statuses=statuses, domain=domain.lower(), since=since, until=until,
                limit=10**6)]
            if not chosen:
                return 0
        if not chosen:
            raise InputError("name addresses, or --domain (with --since/--until)")
        return self._ctx.store.release_addresses(chosen, self._ctx.now())

    def denylist(self, addresses: Sequence[str], *,
                 text: str = "denylisted by an operator") -> int:
        """Put addresses on the denylist; returns how many were not on it before."""
        if not addresses:
            raise InputError("name the addresses to denylist")
        chosen = [normalize_address(a) for a in addresses]
        return self._ctx.store.denylist_addresses(chosen, text, self._ctx.now())
