"""Nothing secret reaches the audit log: `redact` and `jsonable` on what the guard records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from postroom.accounts.audit import REDACTED, jsonable, redact
from postroom.accounts.service import ThrottlePolicy, next_throttle
from postroom.storage.accounts import ThrottleState

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQ...\n-----END PRIVATE KEY-----\n"
TOKEN = "pr_" + "A1b2_C3d4-" * 4


def test_secret_keys_pem_keys_and_tokens_are_redacted_wherever_they_sit() -> None:
    data = {
        "name": "alice", "role": "operator", "password": "hunter2hunter2",
        "settings": {"smtp": {"host": "relay", "password": "p4ss"}, "web": {"secret_key": "s"},
                     "archive": {"ledger_key": "k", "imap_password": ""}},
        "dkim": [{"domain": "example.com", "private_key": PEM}],
        "note": f"use {TOKEN} for CI", "html": "<p>token of thanks</p>",
        "new_password": "x" * 12, "api_key": "abc", "subject": "Hello",
    }
    out = redact(data)
    assert out["password"] == out["new_password"] == out["api_key"] == REDACTED
    assert out["settings"]["smtp"] == {"host": "relay", "password": REDACTED}
    assert out["settings"]["web"]["secret_key"] == REDACTED
    assert out["settings"]["archive"] == {"ledger_key": REDACTED, "imap_password": ""}
    assert out["dkim"] == [{"domain": "example.com", "private_key": REDACTED}]
    assert out["note"] == REDACTED
    assert (out["name"], out["role"], out["subject"], out["html"]) == (
        "alice", "operator", "Hello", "<p>token of thanks</p>")
    text = repr(out)
    for secret in ["hunter2", "p4ss", "MIIEvQ", TOKEN, "abc"]:
        assert secret not in text


def test_jsonable_bounds_and_hides_repr_false_fields() -> None:
    @dataclass(frozen=True)
    class Made:
        id: int
        token: str = field(repr=False)

    assert jsonable(Made(1, TOKEN)) == {"id": 1}
    assert jsonable({"at": datetime(2026, 1, 2, tzinfo=UTC), "p": Path("/x"), "b": b"abc",
                     "s": "y" * 5000, "l": list(range(500))}) == {
        "at": "2026-01-02T00:00:00+00:00", "p": "/x", "b": "<3 bytes>", "s": "y" * 4000 + "…",
        "l": list(range(200))}
    deep: dict[str, object] = {}
    node = deep
    for _ in range(20):
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    assert "…" in repr(jsonable(deep))


def test_throttle_counts_within_the_window_and_locks_at_the_limit() -> None:
    policy = ThrottlePolicy()  # 5 in 15 minutes → 15 minutes
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    state = None
    for minute in range(5):
        state = next_throttle(state, t0.replace(minute=minute), policy)
    assert state is not None and state.failures == 5
    assert state.locked_until == t0.replace(minute=19)
    assert next_throttle(ThrottleState(4, t0, None), t0.replace(minute=15),
                         policy) == ThrottleState(1, t0.replace(minute=15), None)


def test_every_before_snapshot_is_of_an_audited_method() -> None:
    from postroom.accounts.guard import SNAPSHOTS
    from postroom.accounts.policy import REQUIRED, audited

    assert set(SNAPSHOTS) <= set(REQUIRED)
    assert all(audited(key) for key in SNAPSHOTS)
    concerns = {key.split(".")[0] for key in SNAPSHOTS}
    assert {"templates", "accounts", "quarantine", "bounces"} <= concerns
