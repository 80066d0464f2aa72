"""The report's throughput-over-time buckets: at least a second wide, at most 60, the last
acceptance inside the last one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from postroom.storage.report_reads import MAX_BUCKETS, Timeline, buckets

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(("span", "width", "count"), [
    (0.0, 1.0, 1),        # everything in one second
    (0.999, 1.0, 1),
    (1.0, 1.0, 2),        # the last acceptance opens the second bucket
    (30.5, 1.0, 31),
    (59.0, 1.0, 60),
    (60.0, 1.0, 60),      # capped: the last bucket reaches the last acceptance
    (600.0, 10.0, 60),
    (3600.0, 60.0, 60),
])
def test_buckets_cover_first_to_last(span: float, width: float, count: int) -> None:
    assert buckets(T0, T0 + timedelta(seconds=span)) == (width, count)
    assert count <= MAX_BUCKETS


def test_rates_are_per_second_of_each_bucket() -> None:
    assert Timeline(T0, 10.0, [50, 0, 5]).rates() == [5.0, 0.0, 0.5]
