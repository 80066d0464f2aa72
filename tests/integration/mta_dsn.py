"""Real DSNs from the system Postfix, driven into the failures a bounce handler must tell apart.

    sudo .venv/bin/python -m tests.integration.mta_dsn tests/corpus/postfix-dsn

writes one DSN per scenario into the folder (the committed samples were made so); the
integration test `test_mta_dsn.py` generates them afresh and qualifies them. Everything runs on
loopback, under the same lock as the other Postfix tests (tests/integration/postfix.py), and
the system's main.cf and master.cf are restored afterwards:

- user unknown: a local recipient that does not exist (Postfix local(8));
- mailbox full: a local recipient whose mailbox file is at `mailbox_size_limit` (Postfix's
  quota);
- host unknown: a domain the resolver answers NXDOMAIN for (a stub resolver on 127.0.0.1:53
  stands in for DNS; Postfix's chroot has no resolv.conf, so that is where it asks);
- relay denied, message too big, greylisting: a second smtpd on 127.0.0.1:10025 that
  presents itself as another host, does not trust loopback, has a 4,000-byte size limit and
  asks Debian's postgrey (on 127.0.0.1:10023) about every recipient;
- expired in queue: a domain routed to a closed port, with `maximal_queue_lifetime = 0` so
  the first deferral is final.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.dsn_samples import write_samples
from tests.integration.postfix import DOMAIN, LOCK, MAIN_CF, _run, _user

MASTER_CF = Path("/etc/postfix/master.cf")
TRANSPORT = Path("/etc/postfix/postroom_dsn_transport")
ALIASES = Path("/etc/postfix/postroom_dsn_aliases")
QUOTA_DIR = Path("/var/tmp/postroom-quota")
SENDER = f"bounces@{DOMAIN}"
OTHER_MX = "127.0.0.1:10025"
POSTGREY = "127.0.0.1:10023"
QUOTA = 60_000  # mailbox_size_limit: the full mailbox is filled to this
SIZE_LIMIT = 4_000  # message_size_limit of the other MX


@dataclass(frozen=True)
class Scenario:
    name: str
    recipient: str
    body_size: int = 200


SCENARIOS = (
    Scenario("userunknown", f"nosuchuser@{DOMAIN}"),
    Scenario("mailboxfull", f"fulluser@{DOMAIN}"),
    Scenario("hostunknown", "someone@no-such-host.test"),
    Scenario("norelaying", "someone@relay.example"),
    Scenario("mesgtoobig", "someone@small.example", body_size=8_000),
    Scenario("expired", "someone@down.example"),
    Scenario("greylisting", "someone@grey.example"),
)


class _NxResolver:
    """A DNS stub on 127.0.0.1:53 (UDP) that answers NXDOMAIN to every query."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))
        self.sock.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                query, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            if len(query) < 12:
                continue
            # same id and question; QR, opcode, RD copied, RA; RCODE 3 (NXDOMAIN); 1 question
            flags = 0x8000 | (query[2] << 8 & 0x7900) | 0x0080 | 3
            header = query[:2] + flags.to_bytes(2, "big") + query[4:6] + bytes(6)
            self.sock.sendto(header + query[12:], peer)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _postgrey(workdir: Path) -> Iterator[None]:
    pidfile = workdir / "postgrey.pid"
    dbdir = workdir / "postgrey"
    dbdir.mkdir()
    shutil.chown(dbdir, "postgrey", "postgrey")
    subprocess.run(["postgrey", f"--inet={POSTGREY}", f"--dbdir={dbdir}", "--daemonize",
                    f"--pidfile={pidfile}", "--user=postgrey", "--group=postgrey",
                    "--delay=300"], check=True, capture_output=True)
    try:
        deadline = time.monotonic() + 20
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        yield
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)


def _configure(down_port: int) -> None:
    _user("bounces")
    shutil.rmtree(QUOTA_DIR, ignore_errors=True)
    QUOTA_DIR.mkdir(mode=0o1777)
    QUOTA_DIR.chmod(0o1777)
    mailbox = QUOTA_DIR / "fulluser"
    mailbox.write_bytes(b"From old@example.org  Thu Jan  1 00:00:00 1970\n" + b"x" * QUOTA)
    mailbox.chmod(0o666)
    ALIASES.write_text(f"fulluser: {mailbox}\n", encoding="utf-8")
    _run("postalias", str(ALIASES))
    TRANSPORT.write_text(
        "".join(f"{domain} smtp:[127.0.0.1]:10025\n"
                for domain in ("relay.example", "small.example", "grey.example"))
        + f"down.example smtp:[127.0.0.1]:{down_port}\n", encoding="utf-8")
    _run("postmap", str(TRANSPORT))
    _run("postconf", "-e", "myhostname=localhost", "myorigin=localhost",
         f"mydestination={DOMAIN}, localhost", "inet_interfaces=loopback-only",
         "inet_protocols=ipv4", "mynetworks=127.0.0.0/8", "home_mailbox=Maildir/",
         "maillog_file=/var/log/postfix.log", "local_recipient_maps=",
         f"alias_maps=hash:{ALIASES}", f"alias_database=hash:{ALIASES}",
         f"transport_maps=hash:{TRANSPORT}", "relay_domains=small.example, grey.example",
         "default_transport=smtp", "relay_transport=smtp",
         "smtp_dns_support_level=disabled", "maximal_queue_lifetime=0",
         f"mailbox_size_limit={QUOTA}", f"message_size_limit={QUOTA // 2}",
         "smtpd_banner=$myhostname ESMTP")
    with MASTER_CF.open("a", encoding="utf-8") as master:
        master.write(
            f"{OTHER_MX} inet n - n - - smtpd\n"
            "  -o myhostname=mx.other.example\n"
            "  -o smtpd_banner=mx.other.example_ESMTP\n"
            "  -o mynetworks=192.0.2.1/32\n"
            f"  -o message_size_limit={SIZE_LIMIT}\n"
            "  -o smtpd_relay_restrictions=reject_unauth_destination\n"
            f"  -o {{ smtpd_recipient_restrictions = check_policy_service inet:{POSTGREY} }}\n")
    _run("postfix", "check")


def _message(scenario: Scenario) -> bytes:
    body = "\n".join(["This is a test message from Postroom's DSN generator."]
                     + ["x" * 70] * (scenario.body_size // 71))
    return (f"From: Postroom test <{SENDER}>\nTo: <{scenario.recipient}>\n"
            f"Subject: postroom dsn {scenario.name}\n"
            f"Message-ID: <dsn-{scenario.name}@{DOMAIN}>\n\n{body}\n").encode()


def _collect(maildir: Path, wanted: int, timeout: float) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    deadline = time.monotonic() + timeout
    names = {s.name for s in SCENARIOS}
    while len(found) < wanted and time.monotonic() < deadline:
        subprocess.run(["postqueue", "-f"], check=False, capture_output=True)
        time.sleep(0.5)
        for path in sorted((maildir / "new").glob("*")) if (maildir / "new").is_dir() else []:
            data = path.read_bytes()
            match = re.search(rb"postroom dsn (\w+)", data)
            if match is not None and match.group(1).decode() in names:
                found.setdefault(match.group(1).decode(), data)
    return found


def generate(timeout: float = 90) -> dict[str, bytes]:
    """Every scenario's DSN, by scenario name. Needs root, Postfix and postgrey."""
    if os.geteuid() != 0 or shutil.which("postfix") is None or shutil.which("postgrey") is None:
        raise RuntimeError("needs root, Debian's postfix and postgrey packages")
    with LOCK.open("a") as lock, tempfile.TemporaryDirectory() as work:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        saved = MAIN_CF.read_bytes(), MASTER_CF.read_bytes()
        subprocess.run(["postfix", "stop"], check=False, capture_output=True)
        resolver = _NxResolver()
        workdir = Path(work)
        workdir.chmod(0o755)
        try:
            _configure(_closed_port())
            with _postgrey(workdir):
                _run("postfix", "start")
                for scenario in SCENARIOS:
                    subprocess.run(["sendmail", "-i", "-f", SENDER, scenario.recipient],
                                   input=_message(scenario), check=True, capture_output=True)
                maildir = Path(f"~{SENDER.split('@')[0]}").expanduser() / "Maildir"
                return _collect(maildir, len(SCENARIOS), timeout)
        finally:
            subprocess.run(["postfix", "stop"], check=False, capture_output=True)
            MAIN_CF.write_bytes(saved[0])
            MASTER_CF.write_bytes(saved[1])
            resolver.close()
            shutil.rmtree(QUOTA_DIR, ignore_errors=True)


def main(argv: list[str]) -> int:
    return write_samples(argv, (__doc__ or "").split("\n\n")[1].strip(), generate,
                         prefix="postfix", scenarios=(s.name for s in SCENARIOS),
                         missing_hint=" (see /var/log/postfix.log)")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
