"""The store as the sending processes use it: every call retried through database faults.

A worker must outlive a database restart, a failover or a deadlock that the server broke by
aborting one side. Each store method is one transaction, so a call that failed is simply made
again, with backoff (0.1 s doubling up to 5 s), for up to `wait_seconds` in all; then the call
raises `DatabaseUnavailable` and the process ends with that line and a non-zero exit. Errors that
say the connection or the transaction failed (OperationalError: refused, dropped, deadlock,
serialization) are retried for the whole wait; any other database error (a constraint, a bad
statement) a few times only, since waiting will not mend it.

The wait blocks the event loop: nothing else in the process can make progress without the
database anyway, and its heartbeat stopping is right while it cannot record anything.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from postroom.errors import DatabaseUnavailable

__all__ = ["RetryingStore", "describe", "retry_database"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_FIRST_PAUSE = 0.1
_LONGEST_PAUSE = 5.0
_OTHER_ERROR_TRIES = 3


def describe(exc: BaseException) -> str:
    """One short line about a database error: its driver class and first line, no SQL nor
    parameters (they may hold message data)."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0][:200]
    return f"{type(orig).__name__}: {first}" if first else type(orig).__name__


def _transient(exc: DBAPIError) -> bool:
    return isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated


def retry_database(call: Callable[[], T], *, what: str, wait_seconds: float,
                   sleep: Callable[[float], None] = time.sleep,
                   monotonic: Callable[[], float] = time.monotonic,
                   stop: Callable[[], bool] | None = None) -> T:
    """Run `call`, again after each database error, until it succeeds or `wait_seconds` pass;
    `stop()` true after a failure (a SIGTERM came meanwhile) ends the wait at once with
    `DatabaseUnavailable` (its `stopped` set)."""
    started: float | None = None
    pause = _FIRST_PAUSE
    tries = 0
    while True:
        try:
            result = call()
        except DBAPIError as exc:
            tries += 1
            now = monotonic()
            if started is None:
                started = now
                log.warning("database error in %s (%s); retrying for up to %.0f s",
                            what, describe(exc), wait_seconds)
            waited = now - started
            if stop is not None and stop():
                raise DatabaseUnavailable(
                    f"stopped while waiting {waited:.1f} s for the database in {what} "
                    f"({describe(exc)})", stopped=True) from exc
            if waited >= wait_seconds or (not _transient(exc) and tries >= _OTHER_ERROR_TRIES):
                raise DatabaseUnavailable(
                    f"the database failed for {waited:.1f} s in {what} ({describe(exc)}); "
                    f"gave up after {tries} tries (sending.database_wait_seconds = "
                    f"{wait_seconds:g})") from exc
            sleep(min(pause, max(0.0, wait_seconds - waited)))
            pause = min(_LONGEST_PAUSE, pause * 2)
            continue
        if started is not None:
            log.warning("database back after %.1f s (%s, %d failed tries)",
                        monotonic() - started, what, tries)
        return result


class RetryingStore:
    """Any store, each of its methods wrapped in `retry_database`; other attributes as is.

    Once a call has given up, later calls (the process cleaning up on its way out) are tried
    once each, not waited for again.
    """

    def __init__(self, store: object, *, wait_seconds: float,
                 sleep: Callable[[float], None] = time.sleep):
        self._store = store
        self.wait_seconds = wait_seconds
        self._sleep = sleep
        self.gave_up = False

    @property
    def inner(self) -> Any:
        return self._store

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def retried(*args: Any, **kwargs: Any) -> Any:
            try:
                return retry_database(lambda: value(*args, **kwargs), what=name,
                                      wait_seconds=0.0 if self.gave_up else self.wait_seconds,
                                      sleep=self._sleep)
            except DatabaseUnavailable:
                self.gave_up = True
                raise

        return retried
