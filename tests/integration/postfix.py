"""A real Postfix on loopback for end-to-end tests: configured, started and stopped by a fixture.

Needs root and Debian's postfix package (.ci/run installs it); the tests skip otherwise. The
system's main.cf is saved before and restored after, and Postfix is stopped by the fixture.
There is one system Postfix: a lock file keeps two test runs (say, two checkouts on one machine)
from configuring it at once.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DOMAIN = "postroom-pf.example"  # Postfix's local domain: mailboxes and the errors-to box
REMOTE = "remote.example"  # routed to a capture server standing for a remote MX
MAIN_CF = Path("/etc/postfix/main.cf")
LOCK = Path("/tmp/postroom-system-postfix.lock")
TRANSPORT = Path("/etc/postfix/postroom_transport")


@dataclass(frozen=True)
class Postfix:
    port: int

    def maildir(self, user: str) -> Path:
        return Path(pwd.getpwnam(user).pw_dir) / "Maildir"

    def wait_for_mail(self, user: str, count: int, timeout: float = 30) -> list[Path]:
        deadline = time.monotonic() + timeout
        new = self.maildir(user) / "new"
        while time.monotonic() < deadline:
            found = sorted(new.glob("*")) if new.is_dir() else []
            if len(found) >= count:
                return found
            subprocess.run(["postqueue", "-f"], check=False, capture_output=True)
            time.sleep(0.3)
        raise AssertionError(f"{user} got fewer than {count} messages in {timeout} s")


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


def _user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        _run("useradd", "-m", name)
    maildir = Path(pwd.getpwnam(name).pw_dir) / "Maildir"
    shutil.rmtree(maildir, ignore_errors=True)


def postfix_instance(remote_port: int, *, remote_transport: str | None = None,
                     users: tuple[str, ...] = ()) -> Iterator[Postfix]:
    """`remote_transport` (a Postfix transport, e.g. "discard:") replaces the route of
    REMOTE to the capture server on `remote_port`."""
    if shutil.which("postfix") is None or shutil.which("postconf") is None:
        pytest.skip("Postfix is not installed (.ci/run installs Debian's postfix package)")
    if os.geteuid() != 0:
        pytest.skip("the Postfix end-to-end test configures the system Postfix: needs root")
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield from _configured(remote_transport or f"smtp:[127.0.0.1]:{remote_port}", users)


def _configured(remote_transport: str, users: tuple[str, ...] = ()) -> Iterator[Postfix]:
    saved = MAIN_CF.read_bytes()
    subprocess.run(["postfix", "stop"], check=False, capture_output=True)
    try:
        for user in ("bounces", "alice", *users):  # fresh Maildirs, under the lock
            _user(user)
        TRANSPORT.write_text(f"{REMOTE} {remote_transport}\n", encoding="utf-8")
        _run("postmap", str(TRANSPORT))
        _run("postconf", "-e", "myhostname=localhost", "myorigin=localhost",
             f"mydestination={DOMAIN}, localhost", "inet_interfaces=loopback-only",
             "inet_protocols=ipv4", "mynetworks=127.0.0.0/8", "home_mailbox=Maildir/",
             "maillog_file=/var/log/postfix.log", "recipient_delimiter=+",
             "local_recipient_maps=proxy:unix:passwd.byname $alias_maps",
             f"transport_maps=hash:{TRANSPORT}", f"relay_domains={REMOTE}",
             "smtp_dns_support_level=disabled", "smtpd_banner=$myhostname ESMTP")
        _run("newaliases")
        _run("postfix", "check")
        _run("postfix", "start")
        yield Postfix(port=25)
    finally:
        subprocess.run(["postfix", "stop"], check=False, capture_output=True)
        MAIN_CF.write_bytes(saved)
