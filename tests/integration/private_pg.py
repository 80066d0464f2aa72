"""A private PostgreSQL cluster that a test may stop, restart and start at will.

Made with the system's `initdb` in a fresh folder owned by the `postgres` user, started with
`pg_ctl` on a free port of 127.0.0.1 (trust authentication, fsync off: it is thrown away), and
stopped by the fixture (`pg_ctl stop -m immediate`, which signals the postmaster by its pid).
Skips when PostgreSQL 15's binaries or the `postgres` user are missing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    def __init__(self, folder: Path, port: int):
        self.folder = folder
        self.port = port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(BIN / "pg_ctl"), "-D",
                        str(self.folder / "data"), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def start(self) -> None:
        self._ctl("-l", str(self.folder / "server.log"), "-w", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off -c log_lock_waits=on", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-w", "-m", mode, "stop")

    def restart(self) -> None:
        self._ctl("-w", "-m", "fast", "-l", str(self.folder / "server.log"), "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off -c log_lock_waits=on", "restart")

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    pytest.importorskip("psycopg")
    if not (BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL 15 binaries in {BIN}")
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user to run a private cluster")
    folder = Path(tempfile.mkdtemp(prefix="postroom-pg-"))
    shutil.chown(folder, user.pw_uid, user.pw_gid)
    cluster = PrivatePostgres(folder, _free_port())
    subprocess.run(["runuser", "-u", "postgres", "--", str(BIN / "initdb"), "-D",
                    str(folder / "data"), "-A", "trust", "-U", "postgres"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    cluster.start()
    try:
        yield cluster
    finally:
        try:
            cluster.stop("immediate")
        except subprocess.CalledProcessError:  # already stopped, or pg_ctl failed: by its pid
            pid_file = folder / "data" / "postmaster.pid"
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
