"""A real Dovecot IMAP server on loopback for end-to-end tests, started and stopped by a fixture.

It runs from its own configuration file in the test's directory (the system's /etc/dovecot is
not touched), on a free loopback port, plain IMAP (loopback only), with one account: a system
user's Maildir and a password from a passwd-file. Needs root and Debian's dovecot-imapd (.ci/run
installs it); the tests skip otherwise. A lock file keeps two test runs on one machine from
serving the same mailbox at once. Stopped by its master pid.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

LOCK = Path("/tmp/postroom-system-dovecot.lock")


@dataclass(frozen=True)
class Dovecot:
    port: int
    user: str
    password: str
    log: Path | None = None  # Dovecot's own log, while the fixture runs

    def url(self, folder: str = "INBOX") -> str:
        return f"imap://{self.user}@127.0.0.1:{self.port}/{folder}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(root: Path, port: int, user: str, password: str) -> Path:
    entry = pwd.getpwnam(user)
    (root / "run").mkdir(mode=0o755)
    users = root / "users"
    users.write_text(f"{user}:{{PLAIN}}{password}:{entry.pw_uid}:{entry.pw_gid}::"
                     f"{entry.pw_dir}::\n", encoding="utf-8")
    users.chmod(0o644)
    conf = root / "dovecot.conf"
    conf.write_text(f"""
base_dir = {root}/run
state_dir = {root}/run
log_path = {root}/dovecot.log
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = username_format=%u {users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""", encoding="utf-8")
    return conf


def _wait_listening(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"* OK"):
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"Dovecot did not answer on 127.0.0.1:{port} in {timeout} s")


def dovecot_instance(user: str, *,
                     prepare: Callable[[], None] | None = None) -> Iterator[Dovecot]:
    """Serve `user`'s Maildir over IMAP until the fixture ends. `prepare` (e.g. a fresh
    Maildir) runs once the lock is held: another test run on the machine may be serving it."""
    if shutil.which("dovecot") is None:
        pytest.skip("Dovecot is not installed (.ci/run installs Debian's dovecot-imapd)")
    if os.geteuid() != 0:
        pytest.skip("the Dovecot end-to-end test serves a system user's Maildir: needs root")
    # Dovecot's auth process (user dovecot) must reach its files: not under pytest's 0700 tmp.
    with LOCK.open("a") as lock, tempfile.TemporaryDirectory(prefix="postroom-dovecot-") as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if prepare is not None:
            prepare()
        root = Path(tmp)
        root.chmod(0o755)
        port, password = _free_port(), secrets.token_hex(8)
        conf = _config(root, port, user, password)
        # The daemon inherits the output streams: a file, not a pipe that would never close.
        with (root / "start.log").open("wb") as log:
            subprocess.run(["dovecot", "-c", str(conf)], check=True, stdin=subprocess.DEVNULL,
                           stdout=log, stderr=log)
        pid_file = root / "run" / "master.pid"
        try:
            _wait_listening(port)
            yield Dovecot(port, user, password, root / "dovecot.log")
        finally:
            pid = int(pid_file.read_text().strip()) if pid_file.exists() else None
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    try:
                        os.kill(pid, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.1)
