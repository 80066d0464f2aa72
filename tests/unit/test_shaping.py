"""shaping: per-domain connections, messages per connection and per hour, automatic slowdown.

Time is virtual (postroom.testing.clock.FakeClock): waits end when the test moves the clock.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from postroom.delivery.shaping import (
    DomainLimits,
    Pace,
    Shaper,
    ShapingSettings,
    SlowdownSettings,
    Step,
    TokenBucket,
    slowed_limits,
)
from postroom.testing.clock import START, FakeClock, settle

T = TypeVar("T")


def run(test: Callable[[FakeClock], Coroutine[Any, Any, T]]) -> T:
    """Run an async test body with a fresh virtual clock."""
    return asyncio.run(test(FakeClock()))


def shaper(clock: FakeClock, **settings: Any) -> Shaper:
    return Shaper(ShapingSettings.model_validate(settings), clock=clock.now, sleep=clock.sleep)


# -- settings ----------------------------------------------------------------------------------

def test_settings_defaults() -> None:
    settings = ShapingSettings()
    assert settings.default == DomainLimits()
    assert settings.default.messages_per_hour == 0  # no limit
    assert settings.domains == {}
    assert settings.slowdown.window == 50 and settings.slowdown.ratio == 0.3
    assert settings.slowdown.min_failures == 10


def test_an_override_takes_what_it_leaves_out_from_the_default() -> None:
    settings = ShapingSettings.model_validate({
        "default": {"max_connections": 4, "messages_per_hour": 1000},
        "domains": {"Gmail.COM": {"max_connections": 2}, "*.Example.com": {}},
    })
    assert settings.domains == {
        "gmail.com": DomainLimits(max_connections=2, messages_per_connection=1000,
                                  messages_per_hour=1000),
        "*.example.com": DomainLimits(max_connections=4, messages_per_hour=1000),
    }


def test_overrides_built_in_python_inherit_too() -> None:
    settings = ShapingSettings(default=DomainLimits(messages_per_hour=500),
                               domains={"a.test": DomainLimits(max_connections=1)})
    assert settings.domains["a.test"] == DomainLimits(max_connections=1, messages_per_hour=500)


def test_limits_for_picks_exact_then_wildcard_then_default() -> None:
    settings = ShapingSettings.model_validate({"domains": {
        "example.com": {"max_connections": 1}, "*.example.com": {"max_connections": 2}}})
    assert settings.limits_for("Example.com") == ("example.com", DomainLimits(max_connections=1))
    assert settings.limits_for("eu.example.com") == ("*.example.com",
                                                     DomainLimits(max_connections=2))
    assert settings.limits_for("other.test") == ("other.test", DomainLimits())


@pytest.mark.parametrize("data", [
    {"default": {"max_connections": 0}},
    {"default": {"messages_per_hour": -1}},
    {"domains": {"a.test": {"max_connections": 0}}},
    {"domains": {"a.test": {"max_conections": 2}}},
    {"domains": {"A.test": {}, "a.test.": {}}},
    {"domains": {"*": {}}},
    {"slowdown": {"ratio": 0}},
    {"slowdown": {"ratio": 1.5}},
    {"default": "fast"},
    {"domains": {"a.test": 5}},
])
def test_bad_settings_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ShapingSettings.model_validate(data)


# -- pure parts --------------------------------------------------------------------------------

def test_slowed_limits_halve_and_stop_at_one() -> None:
    limits = DomainLimits(max_connections=10, messages_per_connection=100,
                          messages_per_hour=1000)
    assert slowed_limits(limits, 0) == limits
    assert slowed_limits(limits, 1) == DomainLimits(max_connections=5,
                                                    messages_per_connection=100,
                                                    messages_per_hour=500)
    assert slowed_limits(limits, 20) == DomainLimits(max_connections=1,
                                                     messages_per_connection=100,
                                                     messages_per_hour=1)
    assert slowed_limits(DomainLimits(), 3).messages_per_hour == 0  # unlimited stays so


def test_token_bucket_keeps_a_minute_and_charges_in_advance() -> None:
    bucket = TokenBucket.full(3600, START)  # one a second, 60 saved up
    assert [bucket.take(START) for _ in range(60)] == [0.0] * 60
    assert [bucket.take(START) for _ in range(3)] == [1.0, 2.0, 3.0]
    later = START + timedelta(seconds=3)
    assert bucket.take(later) == 1.0  # the three in advance are paid back; a fourth waits


def test_token_bucket_refills_to_its_capacity_only() -> None:
    bucket = TokenBucket.full(60, START)  # one a minute, at most one saved up
    assert bucket.take(START) == 0.0
    assert bucket.take(START + timedelta(hours=5)) == 0.0
    assert bucket.take(START + timedelta(hours=5)) == 60.0


def test_token_bucket_gives_back_and_changes_rate() -> None:
    bucket = TokenBucket.full(60, START)
    bucket.take(START)
    assert bucket.take(START) == 60.0
    bucket.give_back(START)
    assert bucket.take(START) == 60.0
    bucket.set_rate(30, START)
    assert bucket.take(START) == 240.0  # two owed, at two minutes each


def pace(**rules: Any) -> Pace:
    return Pace(SlowdownSettings(**rules), deepest=3)


def feed(p: Pace, codes: Sequence[int | None]) -> list[Step]:
    return [step for code in codes if (step := p.observe(code)) is not None]


def test_pace_slows_down_at_the_share_and_count_of_4xx() -> None:
    p = pace()
    assert feed(p, [250] * 40 + [451] * 9) == []  # 9 of 49: too few
    assert feed(p, [451]) == []  # 10 of 50 is 20%: too small a share...
    p = pace()
    assert feed(p, [250] * 35 + [421] * 14) == []
    assert feed(p, [None]) == [Step.SLOWER]  # ...15 of 50 is 30%; no reply counts as a 4xx
    assert p.level == 1 and p.reason == (
        "15 of its last 50 replies were temporary failures (4xx or none)")


def test_pace_needs_the_minimum_count_even_at_a_high_share() -> None:
    p = pace()
    assert feed(p, [451] * 9) == []
    assert feed(p, [451]) == [Step.SLOWER]


def test_pace_judges_the_window_only() -> None:
    p = pace(window=10, min_failures=3)
    assert feed(p, [451, 451] + [250] * 8) == []
    assert feed(p, [451, 451]) == []  # the first two 451s left the window: still 2 of 10
    assert feed(p, [451]) == [Step.SLOWER]  # 3 of 10


def test_pace_counts_5xx_as_replies_but_not_as_temporary() -> None:
    p = pace(window=10, min_failures=3)
    assert feed(p, [550] * 10 + [451, 451]) == []
    assert feed(p, [451]) == [Step.SLOWER]


def test_pace_judges_fresh_replies_after_a_step_and_stops_at_the_deepest() -> None:
    p = pace(window=10, min_failures=3, ratio=0.5)
    assert feed(p, [451] * 3) == [Step.SLOWER]
    assert feed(p, [451] * 2) == []
    assert feed(p, [451] * 7) == [Step.SLOWER, Step.SLOWER]
    assert p.level == 3
    assert feed(p, [451] * 30) == []
    assert p.level == 3


def test_pace_recovers_one_step_per_run_of_successes() -> None:
    p = pace(window=10, min_failures=3, recovery_successes=20)
    feed(p, [451] * 6)
    assert p.level == 2
    assert feed(p, [250] * 19 + [550]) == []  # a 5xx does not break the run...
    assert feed(p, [250]) == [Step.FASTER]
    assert feed(p, [250] * 10 + [451] + [250] * 19) == []  # ...a 4xx does
    assert feed(p, [250]) == [Step.FASTER]
    assert p.level == 0
    assert feed(p, [250] * 100) == []


# -- the shaper: connections -------------------------------------------------------------------

def test_connections_wait_for_a_free_slot_in_order() -> None:
    async def go(clock: FakeClock) -> None:
        s = shaper(clock, default={"max_connections": 2})
        opened: list[str] = []
        done = {name: asyncio.Event() for name in "abcd"}

        async def connect(name: str) -> None:
            async with s.connection("example.com"):
                opened.append(name)
                await done[name].wait()

        tasks = [asyncio.create_task(connect(name)) for name in "abcd"]
        await settle()
        assert opened == ["a", "b"]
        done["b"].set()
        await settle()
        assert opened == ["a", "b", "c"]
        done["a"].set()
        await settle()
        assert opened == ["a", "b", "c", "d"]
        done["c"].set()
        done["d"].set()
        await asyncio.gather(*tasks)

    run(go)


def test_domains_have_their_own_slots_and_a_wildcard_shares_one_budget() -> None:
    async def go(clock: FakeClock) -> None:
        s = shaper(clock, default={"max_connections": 1},
                   domains={"*.example.com": {"max_connections": 1}})
        async with s.connection("a.test"), s.connection("b.test"):
            pass  # each default domain has its own slot
        async with s.connection("eu.example.com"):
            waiting = asyncio.create_task(_enter(s, "us.example.com"))
            await settle()
            assert not waiting.done()  # both under *.example.com: one slot
        await settle()
        assert waiting.done()

    run(go)


async def _enter(s: Shaper, domain: str) -> None:
    async with s.connection(domain):
        pass


@pytest.mark.parametrize("when", ["while it waits", "as it is granted"])
def test_a_cancelled_wait_for_a_connection_leaks_no_slot(when: str) -> None:
    async def go(clock: FakeClock) -> None:
        s = shaper(clock, default={"max_connections": 1})
        async with s.connection("example.com"):
            waiting = asyncio.create_task(_enter(s, "example.com"))
            await settle()
            if when == "while it waits":
                waiting.cancel()
                await settle()
        if when == "as it is granted":
            waiting.cancel()  # the slot was handed over; the task has not run yet
            await settle()
        assert waiting.cancelled()
        await asyncio.wait_for(_enter(s, "example.com"), timeout=1)

    run(go)


def test_messages_per_connection() -> None:
    s = Shaper(ShapingSettings.model_validate(
        {"domains": {"example.com": {"messages_per_connection": 3}}}), clock=FakeClock().now)
    assert [s.may_reuse("example.com", n) for n in range(5)] == [True] * 3 + [False] * 2
    assert s.may_reuse("other.test", 999) and not s.may_reuse("other.test", 1000)


# -- the shaper: messages per hour -------------------------------------------------------------

def _sent_in(s: Shaper, clock: FakeClock, domain: str, seconds: float) -> list[float]:
    """The engine's pacing without sockets: reserve a token, wait what it says, send; the
    times of the messages sent within `seconds`."""
    sent: list[float] = []

    async def go() -> None:
        while True:
            wait = s.reserve_message(domain)
            if clock.monotonic() + wait > seconds:
                s.give_back(domain)  # not sent after all (the engine postpones it)
                return
            await clock.advance(wait)
            sent.append(clock.monotonic())

    asyncio.run(go())
    return sent


def test_messages_per_hour_hold_over_an_hour() -> None:
    clock = FakeClock()
    s = shaper(clock, default={"messages_per_hour": 120})  # one each 30 s, two saved up
    sent = _sent_in(s, clock, "example.com", 3600)
    assert sent[:3] == [0.0, 0.0, 30.0]
    assert len(sent) == 2 + 120  # the burst, then the rate
    assert all(b - a == 30.0 for a, b in itertools.pairwise(sent[2:]))


def test_reservations_queue_up_in_turn() -> None:
    s = shaper(FakeClock(), default={"messages_per_hour": 60})
    assert [s.reserve_message("example.com") for _ in range(3)] == [0.0, 60.0, 120.0]
    assert s.reserve_message("other.test") == 0.0  # a budget per domain


def test_no_hourly_limit_means_no_wait() -> None:
    s = shaper(FakeClock())
    assert {s.reserve_message("example.com") for _ in range(10_000)} == {0.0}
    s.give_back("example.com")  # nothing to give back to: harmless


def test_a_message_given_back_returns_its_token() -> None:
    s = shaper(FakeClock(), default={"messages_per_hour": 60})
    assert [s.reserve_message("example.com") for _ in range(3)] == [0.0, 60.0, 120.0]
    s.give_back("example.com")
    assert s.reserve_message("example.com") == 120.0  # not 180: the token came back


def test_a_wildcard_budget_is_shared_by_its_domains() -> None:
    s = shaper(FakeClock(), domains={"*.example.com": {"messages_per_hour": 60}})
    assert s.reserve_message("a.example.com") == 0.0
    assert s.reserve_message("b.example.com") == 60.0
    s.give_back("b.example.com")
    assert s.reserve_message("a.example.com") == 60.0


# -- the shaper: slowing down ------------------------------------------------------------------

SLOW = {"window": 10, "min_failures": 3, "recovery_successes": 5}


def test_a_domain_answering_4xx_is_slowed_down_and_recovers() -> None:
    async def go(clock: FakeClock) -> None:
        s = shaper(clock, default={"max_connections": 8, "messages_per_hour": 600},
                   slowdown=SLOW)
        for _ in range(3):
            s.observe("example.com", 421)
        assert s.limits("example.com").max_connections == 4
        assert s.limits("example.com").messages_per_hour == 300
        assert s.limits("other.test").max_connections == 8
        [slowdown] = s.slowed()
        assert (slowdown.domain, slowdown.since, slowdown.level) == ("example.com", START, 1)
        assert "3 of its last 3 replies were temporary failures" in slowdown.reason

        await clock.advance(600)
        for _ in range(3):
            s.observe("example.com", 451)
        assert s.limits("example.com").max_connections == 2
        for _ in range(5):
            s.observe("example.com", 250)
        assert s.limits("example.com").max_connections == 4
        await clock.advance(60)
        for _ in range(5):
            s.observe("example.com", 250)
        assert s.limits("example.com") == DomainLimits(max_connections=8,
                                                       messages_per_hour=600)
        [slowdown] = s.slowed()
        assert slowdown.since == START and slowdown.level == 0 and slowdown.deepest == 2
        assert slowdown.recovered_at == START + timedelta(seconds=660)

    run(go)


def test_slowing_down_takes_effect_on_waiting_connections_and_rate() -> None:
    async def go(clock: FakeClock) -> None:
        s = shaper(clock, default={"max_connections": 2, "messages_per_hour": 3600},
                   slowdown=SLOW)
        async with s.connection("example.com"):
            for _ in range(3):
                s.observe("example.com", 421)
            second = asyncio.create_task(_enter(s, "example.com"))
            await settle()
            assert not second.done()  # one connection now, and it is in use
            for _ in range(5):
                s.observe("example.com", 250)  # recovered: two again
            await settle()
            assert second.done()

    run(go)


def test_each_slowdown_is_reported_apart() -> None:
    async def go(clock: FakeClock) -> None:
        s = shaper(clock, default={"max_connections": 4}, slowdown=SLOW,
                   domains={"*.example.com": {}})
        for _ in range(3):
            s.observe("a.example.com", None)
        await clock.advance(10)
        for _ in range(5):
            s.observe("b.example.com", 250)
        await clock.advance(10)
        for _ in range(3):
            s.observe("other.test", 452)
        reported = s.slowed()
        assert [(r.domain, r.level, r.recovered_at is None) for r in reported] == [
            ("*.example.com", 0, False), ("other.test", 1, True)]
        assert reported[1].since == START + timedelta(seconds=20)

    run(go)


def test_a_domain_that_cannot_go_slower_is_not_reported() -> None:
    async def go(clock: FakeClock) -> None:
        s = shaper(clock, default={"max_connections": 1}, slowdown=SLOW)
        for _ in range(30):
            s.observe("example.com", 421)
        assert s.slowed() == ()

    run(go)


def test_the_slowdown_can_be_switched_off() -> None:
    async def go(clock: FakeClock) -> None:
        s = shaper(clock, slowdown={**SLOW, "enabled": False})
        for _ in range(30):
            s.observe("example.com", 421)
        assert s.slowed() == () and s.limits("example.com") == DomainLimits()

    run(go)


def test_a_domain_is_one_budget_however_it_is_written() -> None:
    async def go(clock: FakeClock) -> None:
        s = shaper(clock, default={"max_connections": 1})
        async with s.connection("Example.COM"):
            waiting = asyncio.create_task(_enter(s, "example.com."))
            await settle()
            assert not waiting.done()
        await asyncio.wait_for(waiting, timeout=1)

    run(go)
