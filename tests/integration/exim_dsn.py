"""Real bounces from Exim 4, run unprivileged beside the system Postfix.

    sudo .venv/bin/python -m tests.integration.exim_dsn tests/corpus/exim-dsn

Debian's exim4 packages conflict with postfix, so Exim is not installed: its packages are
unpacked where $POSTROOM_EXIM_ROOT points (`apt-get download exim4-base exim4-config
exim4-daemon-light libidn12` and `dpkg -x` each there; the binary's set-uid bit removed). The
binary looks up its compiled-in user `Debian-exim` at start, so that user must exist. Exim runs
as `nobody` with its own configuration (-C) and spool in a temporary folder, submits one
message per scenario with -odi (delivery in the foreground), and writes its bounces to a local
Maildir. The remote side is Postroom's CaptureServer on loopback, scripted to answer as a
receiving server does; there are no retry rules, so a temporary failure bounces at once:

- user unknown, relay denied, message too big (at DATA), greylisting (4xx): the remote's reply;
- mailbox full: Exim's own appendfile quota on a local mailbox;
- expired: a domain routed to a closed port.

Host unknown is not generated: Exim would ask the system's resolver, off loopback.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from postroom.testing.smtp_server import CaptureServer, Script
from tests.integration.dsn_samples import write_samples

ROOT = Path(os.environ.get("POSTROOM_EXIM_ROOT", "/tmp/exim-root"))
SENDER = "bounces@exim.test"
GREYLISTED = ("450 4.2.0 <{rcpt}>: Recipient address rejected: Greylisted, see "
              "http://postgrey.schweikert.ch/help/remote.test.html")


@dataclass(frozen=True)
class Scenario:
    name: str
    recipient: str


SCENARIOS = (
    Scenario("userunknown", "gone@remote.test"),
    Scenario("mailboxfull", "fulluser@exim.test"),
    Scenario("norelaying", "relay@remote.test"),
    Scenario("mesgtoobig", "big@remote.test"),
    Scenario("greylisting", "grey@remote.test"),
    Scenario("expired", "someone@down.test"),
)


def available() -> str | None:
    """Why Exim cannot run here, or None when it can."""
    binary = ROOT / "usr" / "sbin" / "exim4"
    if os.geteuid() != 0:
        return "needs root (to run Exim as nobody)"
    if not binary.is_file():
        return f"Exim is not unpacked in {ROOT} ($POSTROOM_EXIM_ROOT)"
    try:
        pwd.getpwnam("Debian-exim")
    except KeyError:
        return "the user Debian-exim (Exim's compiled-in user) does not exist"
    return None


def _script() -> Script:
    return (Script()
            .on_rcpt("gone@remote.test",
                     "550 5.1.1 <gone@remote.test>: Recipient address rejected: User unknown")
            .on_rcpt("relay@remote.test", "554 5.7.1 <relay@remote.test>: Relay access denied")
            .on_rcpt("grey@remote.test", GREYLISTED.format(rcpt="grey@remote.test"))
            .on_data("big@remote.test", "552 5.3.4 Message size exceeds fixed limit"))


def _config(work: Path, port: int, closed: int) -> str:
    return f"""
primary_hostname = exim.test
exim_user = nobody
exim_group = nogroup
never_users =
keep_environment = LD_LIBRARY_PATH
exim_path = {ROOT}/usr/sbin/exim4
spool_directory = {work}/spool
log_file_path = {work}/log/%slog
domainlist local_domains = exim.test

begin routers
remote:
  driver = manualroute
  domains = remote.test
  transport = remote_smtp
  route_list = * 127.0.0.1::{port}
  self = send
down:
  driver = manualroute
  domains = down.test
  transport = remote_smtp
  route_list = * 127.0.0.1::{closed}
  self = send
full:
  driver = accept
  domains = +local_domains
  local_parts = fulluser
  transport = quota_file
local:
  driver = accept
  domains = +local_domains
  local_parts = bounces
  transport = maildir

begin transports
remote_smtp:
  driver = smtp
  allow_localhost
quota_file:
  driver = appendfile
  file = {work}/mail/fulluser
  quota = 1K
maildir:
  driver = appendfile
  directory = {work}/Maildir
  maildir_format

begin retry

begin rewrite
"""


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def generate() -> dict[str, bytes]:
    """Every scenario's bounce, by scenario name."""
    reason = available()
    if reason is not None:
        raise RuntimeError(reason)
    server = CaptureServer(script=_script())
    server.start()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for sub in ("spool", "log", "mail", "Maildir"):
            (work / sub).mkdir()
        (work / "mail" / "fulluser").write_bytes(b"x" * 2048)  # already over the quota
        config = work / "exim.conf"
        config.write_text(_config(work, server.port, _closed_port()), encoding="utf-8")
        for path in [work, *work.rglob("*")]:
            shutil.chown(path, "nobody", "nogroup")
        env = {"LD_LIBRARY_PATH": str(ROOT / "usr" / "lib" / "x86_64-linux-gnu")}
        try:
            for scenario in SCENARIOS:
                message = (f"From: <{SENDER}>\nTo: <{scenario.recipient}>\n"
                           f"Subject: postroom dsn {scenario.name}\n"
                           f"Message-ID: <dsn-{scenario.name}@exim.test>\n\nHello.\n")
                subprocess.run([str(ROOT / "usr" / "sbin" / "exim4"), "-C", str(config), "-odi",
                                "-f", SENDER, scenario.recipient], input=message.encode(),
                               env=env, user="nobody", group="nogroup", capture_output=True,
                               check=False, timeout=60)
            found: dict[str, bytes] = {}
            for path in sorted((work / "Maildir" / "new").glob("*")):
                data = path.read_bytes()
                for scenario in SCENARIOS:
                    if f"postroom dsn {scenario.name}\n".encode() in data:
                        found.setdefault(scenario.name, data)
            return found
        finally:
            server.stop()


def main(argv: list[str]) -> int:
    return write_samples(argv, (__doc__ or "").split("\n\n")[1].strip(), generate,
                         prefix="exim", scenarios=(s.name for s in SCENARIOS))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
