"""The archive loop's group commit (delivery/archive.py, `Archiver._record`): the groups whose
replies arrive in one turn of the event loop are recorded in one `record_archive` call, and no
connection goes on before its group is committed (or fails with the commit)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from postroom.delivery.archive import Archiver, ArchiveTarget
from postroom.domain.models import ArchiveCopy, ArchiveResult, ArchiveState

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # handed to the store as is: no real clock


class Store:
    """The archive store protocol, recording each commit; `fail` makes the next one raise."""

    def __init__(self) -> None:
        self.commits: list[list[int]] = []
        self.fail: BaseException | None = None

    def claim_archive(self, now: datetime, limit: int, lease: timedelta, *,
                      delivery_id: int | None = None, worker: str = "") -> list[ArchiveCopy]:
        return []

    def record_archive(self, results: list[ArchiveResult], now: datetime) -> None:
        assert now == NOW
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        self.commits.append([r.copy_id for r in results])

    def archive_pending(self, delivery_id: int | None = None) -> int:
        return 0


def _archiver(store: Store) -> Archiver:
    def no_transport() -> object:
        raise AssertionError("the group commit opens no connection")

    return Archiver(store, no_transport,  # type: ignore[arg-type]
                    target=ArchiveTarget("archive@postroom.example", "bounces@postroom.example"),
                    connections=4, max_backoff=60, clock=lambda: NOW)


def _group(*ids: int) -> list[ArchiveResult]:
    return [ArchiveResult(i, ArchiveState.ARCHIVED, "250 ok") for i in ids]


def test_groups_answered_in_one_turn_are_committed_together_in_arrival_order() -> None:
    store = Store()
    archiver = _archiver(store)

    async def main() -> None:
        await asyncio.gather(archiver._record(_group(1, 2)), archiver._record(_group(3)),
                             archiver._record(_group(4, 5, 6)))

    asyncio.run(main())
    assert store.commits == [[1, 2, 3, 4, 5, 6]]


def test_a_group_answered_in_the_next_turn_still_joins_the_commit() -> None:
    """The recorder lets the loop turn once before it commits: replies read in that turn (the
    other connections' reads, scheduled after the first) go in the same transaction."""
    store = Store()
    archiver = _archiver(store)

    async def late(ids: tuple[int, ...]) -> None:
        await asyncio.sleep(0)
        await archiver._record(_group(*ids))

    async def main() -> None:
        await asyncio.gather(archiver._record(_group(1)), late((2, 3)))

    asyncio.run(main())
    assert store.commits == [[1, 2, 3]]


def test_a_connection_waits_for_its_commit_and_a_later_group_gets_a_commit_of_its_own() -> None:
    store = Store()
    archiver = _archiver(store)
    seen: list[list[list[int]]] = []

    async def connection(ids: tuple[int, ...], delay: int) -> None:
        for _ in range(delay):
            await asyncio.sleep(0)
        await archiver._record(_group(*ids))
        seen.append([list(c) for c in store.commits])  # what was committed when it went on

    async def main() -> None:
        await asyncio.gather(connection((1,), 0), connection((2,), 5))

    asyncio.run(main())
    assert store.commits == [[1], [2]]
    assert seen == [[[1]], [[1], [2]]]


def test_a_failed_commit_fails_every_group_in_it_and_the_next_group_is_committed() -> None:
    store = Store()
    store.fail = RuntimeError("database gone")
    archiver = _archiver(store)

    async def main() -> list[BaseException | None]:
        outcomes = await asyncio.gather(archiver._record(_group(1)), archiver._record(_group(2)),
                                        return_exceptions=True)
        await archiver._record(_group(3))
        return list(outcomes)

    outcomes = asyncio.run(main())
    assert [str(o) for o in outcomes] == ["database gone", "database gone"]
    assert store.commits == [[3]]

