"""FakeClock: virtual time for code that sleeps; sleepers wake in order, at their own time."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from postroom.testing.clock import START, FakeClock


def test_sleepers_wake_in_order_at_their_time() -> None:
    async def go() -> list[tuple[str, float]]:
        clock = FakeClock()
        woke: list[tuple[str, float]] = []

        async def nap(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append((name, clock.monotonic()))

        tasks = [asyncio.create_task(nap(n, s)) for n, s in (("late", 30), ("early", 10),
                                                              ("never", 100))]
        await clock.advance(0)
        assert clock.sleeping == 3 and woke == []
        await clock.advance(60)
        assert clock.now() == START + timedelta(seconds=60) and clock.sleeping == 1
        tasks[2].cancel()
        await asyncio.gather(*tasks[:2])
        return woke

    assert asyncio.run(go()) == [("early", 10.0), ("late", 30.0)]


def test_a_sleeper_may_sleep_again_within_one_advance() -> None:
    async def go() -> list[float]:
        clock = FakeClock()
        ticks: list[float] = []

        async def tick() -> None:
            for _ in range(3):
                await clock.sleep(5)
                ticks.append(clock.monotonic())

        task = asyncio.create_task(tick())
        await clock.advance(12)
        assert ticks == [5.0, 10.0]
        await clock.advance(3)
        await task
        return ticks

    assert asyncio.run(go()) == [5.0, 10.0, 15.0]


def test_zero_sleep_does_not_wait_for_the_clock() -> None:
    async def go() -> None:
        clock = FakeClock()
        await asyncio.wait_for(clock.sleep(0), timeout=1)
        assert clock.now() == START

    asyncio.run(go())
