"""Peak memory of processing a backlog of large stored bounces (issue 12).

    python bench/bounce_backlog.py [--count 40] [--mib 10]

Stores COUNT messages of MIB MiB each (a DSN padded with a large text part) straight into a
fresh SQLite store, then runs `bounces.process()` in a new process and prints its peak RSS
(ru_maxrss) next to the RSS before processing. Run it against another tree with
PYTHONPATH=OTHER/src to compare. Prints JSON; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if not any(Path(p).resolve() == ROOT / "src" for p in sys.path if p):
    sys.path.append(str(ROOT / "src"))  # after PYTHONPATH: another tree may be measured


def _message(number: int, size: int) -> bytes:
    head = (f"From: MAILER-DAEMON@mx.example.org\nTo: bounces@postroom.example\n"
            f"Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n"
            f"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
            f"Final-Recipient: rfc822; r{number}@example.org\nAction: failed\n"
            f"Status: 5.1.1\n\n--B\nContent-Type: text/plain\n\n").encode()
    line = b"x" * 76 + b"\n"
    return head + line * ((size - len(head)) // len(line)) + b"--B--\n"


def _postroom(db: Path):  # type: ignore[no-untyped-def]
    from postroom.settings import Settings
    from postroom.wiring import build

    return build(Settings(database_url=f"sqlite:///{db}"))


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(db: Path) -> None:
    """In a fresh process: process the stored backlog, print the memory figures."""
    postroom = _postroom(db)
    before = _rss_mib()
    summary = postroom.bounces.process()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rss_before_mib": round(before, 1), "peak_rss_mib": round(peak, 1),
                      "processed": summary.processed}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--mib", type=float, default=10.0)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        measure(args.measure)
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "backlog.db"
        postroom = _postroom(db)
        now = postroom.clock()
        size = int(args.mib * 1024 * 1024)
        for number in range(args.count):
            postroom.store.store_bounce(_message(number, size), source="bench", envelope_to="",
                                        now=now)
        postroom.store.close()
        result = subprocess.run([sys.executable, __file__, "--measure", str(db)],
                                capture_output=True, text=True, check=True)
        figures = json.loads(result.stdout)
    print(json.dumps({"count": args.count, "mib_each": args.mib, **figures}))


if __name__ == "__main__":
    main()
