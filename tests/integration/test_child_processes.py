"""app/children.py: a send's child processes are forked from a server that has already imported
what they need (ADR 0036), know their parent, and only settings that use children start one."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from postroom.app.children import (
    PRELOAD,
    child_context,
    parent_alive,
    start_child,
    uses_children,
    warm,
)
from postroom.settings import ArchiveSettings, SendingSettings, Settings


def _settings(*, processes: int = 1, archive: bool = False, own_process: bool = False) -> Settings:
    return Settings(database_url="sqlite:///unused.db",
                    sending=SendingSettings(processes=processes),
                    archive=ArchiveSettings(enabled=archive,
                                            bcc_address=["archive@example.org"] if archive
                                            else [], own_process=own_process))


def test_only_settings_with_helpers_or_an_archive_process_use_children() -> None:
    assert not uses_children(_settings())
    assert uses_children(_settings(processes=2))
    assert uses_children(_settings(archive=True, own_process=True))
    assert not uses_children(_settings(archive=True))
    assert not uses_children(_settings(own_process=True))  # no archive, no archive process
    assert not warm(_settings())


def _report(send: Connection) -> None:
    parent = multiprocessing.parent_process()
    send.send({"preloaded": [name for name in PRELOAD if name in sys.modules],
               "parent": parent.pid if parent else None, "parent_alive": parent_alive(),
               "cwd": os.getcwd(), "now": time.time()})


def test_a_child_comes_with_the_sending_modules_imported_and_knows_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert warm(_settings(processes=2))
    time.sleep(1.0)  # the server is older than its child by a second at least
    made = child_context()
    receive, send = made.Pipe(duplex=False)
    child = made.Process(target=_report, args=(send,), daemon=True)
    monkeypatch.chdir(tmp_path)  # the child works in the caller's folder of the moment
    try:
        asyncio.run(start_child(child))
        send.close()
        assert receive.poll(60)
        report = receive.recv()
        received = time.time()
    finally:
        child.join(10)
    assert child.exitcode == 0
    # imported by the server before the fork, not by the child (which ran nothing but _report)
    assert report["preloaded"] == PRELOAD
    # its parent is this process, not the fork server it was forked from
    assert report["parent"] == os.getpid() and report["parent_alive"] is True
    assert report["cwd"] == str(tmp_path)
    # the wall clock it reads is this process's (leases and heartbeats are compared across
    # processes), not one that started when the server did
    assert received - 0.5 < report["now"] <= received
    assert parent_alive()  # outside a child: no parent to lose
