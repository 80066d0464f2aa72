"""The `Postroom` container and the permission table agree: every public method of every
service has a `REQUIRED` entry (a method nobody classified would be refused to everyone, or
worse, reachable unchecked), and every entry names a method that exists."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.accounts.policy import REQUIRED
from postroom.app import Postroom
from postroom.app.container import SERVICES
from postroom.settings import Settings
from postroom.wiring import build


@pytest.fixture(scope="module")
def postroom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postroom]:
    path: Path = tmp_path_factory.mktemp("policy") / "postroom.db"
    built = build(Settings(database_url=f"sqlite:///{path}"))
    yield built
    built.close()


def _concerns(postroom: Postroom) -> list[str]:
    """The services of the container: SERVICES, and `accounts` once it is wired in."""
    return [*SERVICES, *(["accounts"] if hasattr(postroom, "accounts") else [])]


def public_methods(service: object) -> set[str]:
    return {name for name, value in inspect.getmembers(service)
            if not name.startswith("_") and callable(value)}


def test_every_public_service_method_has_a_permission_entry(postroom: Postroom) -> None:
    missing = sorted(f"{concern}.{method}" for concern in _concerns(postroom)
                     for method in public_methods(getattr(postroom, concern))
                     if f"{concern}.{method}" not in REQUIRED)
    assert not missing, f"add to accounts/policy.py REQUIRED: {', '.join(missing)}"


def test_every_permission_entry_names_a_service_method(postroom: Postroom) -> None:
    concerns = set(_concerns(postroom))
    unknown = sorted(key for key in REQUIRED if key.split(".")[0] in concerns
                     and key.split(".")[1] not in public_methods(getattr(postroom,
                                                                         key.split(".")[0])))
    assert not unknown, f"no such service method: {', '.join(unknown)}"
    assert {key.split(".")[0] for key in REQUIRED} - concerns <= {"accounts"}


def test_the_io_methods_are_coroutines(postroom: Postroom) -> None:
    """An async web handler awaits them; only the CLI wraps them in asyncio.run."""
    for service, method in (("sending", "send"), ("sending", "work"), ("proofs", "proof"),
                            ("archive", "flush")):
        assert inspect.iscoroutinefunction(getattr(getattr(postroom, service), method))


def test_the_container_s_clock_is_every_service_s(postroom: Postroom) -> None:
    from datetime import UTC, datetime

    moment = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
    before = postroom.clock
    postroom.clock = lambda: moment
    try:
        assert postroom.context.now() == moment
        assert postroom.bounces._clock() == moment
    finally:
        postroom.clock = before
