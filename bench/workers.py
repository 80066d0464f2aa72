"""Scaling with worker processes (issues 5 and 16): one worker, then two, on SQLite (WAL) and on
PostgreSQL, Email BCC off and on, against the same `smtp-sink`, in one run on this machine.

    python bench/workers.py [--recipients N] [--connections C] [--stores S,S] [--bcc off,on]
                            [--no-write]

Needs PostgreSQL (default `postgresql+psycopg://postgres@127.0.0.1:5432/postgres`, or
$POSTROOM_BENCH_PG_ADMIN: a scratch database is created and dropped) and Postfix's smtp-sink.
Each measurement: a fresh delivery to the same N recipients is set `sending` while the workers
already run (`postroom worker`), and the clock runs until it is finished (and, with Email BCC
on, every archive copy is archived). Writes the section "## Worker scaling (issues 5, 16)" of
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from results_file import replace_section
from sqlalchemy import create_engine
from throughput import Sink, _child_env
from throughput_data import ERRORS_TO, FROM_ADDRESS, HTML, SUBJECT, TEXT, jinja, recipients
from throughput_report import machine

from postroom.domain.models import ArchiveState
from postroom.domain.states import DeliveryState
from postroom.settings import Settings, load_settings
from postroom.wiring import build

SECTION = "## Worker scaling (issues 5, 16)"
PG_ADMIN = os.environ.get("POSTROOM_BENCH_PG_ADMIN",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _config(folder: Path, url: str, relay: Sink, archive: Sink, connections: int) -> Path:
    path = folder / "postroom.toml"
    path.write_text(
        f'database_url = "{url}"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {relay.port}\n'
        f'[sending]\nhelo_name = "bench.example.com"\nconnections = {connections}\n'
        f'worker_poll_seconds = 0.1\n'
        f'[defaults]\nfrom_address = "{FROM_ADDRESS}"\nerrors_to = "{ERRORS_TO}"\n'
        f'[archive]\nenabled = true\nbcc_address = "archive@archive.example.com"\n'
        f'connections = {connections}\n'
        f'[archive.relay]\nhost = "127.0.0.1"\nport = {archive.port}\n', encoding="utf-8")
    return path


def _csv(folder: Path, count: int) -> Path:
    import csv

    path = folder / "audience.csv"
    rows = list(recipients(count))
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def measure(config: Path, folder: Path, workers: int, bcc: bool) -> tuple[int, float]:
    """Start `workers` workers, hand them a fresh delivery; (messages, seconds)."""
    postroom = build(_load(config))
    delivery, _ = postroom.deliveries.create_delivery(_template(bcc),
                                                      name=f"{workers} worker(s)")
    report = postroom.deliveries.analyze(delivery.id)
    assert report.ok, report.errors
    procs = [subprocess.Popen([sys.executable, "-m", "postroom", "--config", str(config),
                               "worker"], env=_child_env(),
                              stdout=(folder / f"w{workers}.{i}.{int(bcc)}.log").open("wb"),
                              stderr=subprocess.STDOUT) for i in range(workers)]
    try:
        time.sleep(3)  # started, registered, idle
        start = time.monotonic()
        postroom.deliveries.start(delivery.id)
        while True:
            done = postroom.store.get_delivery(delivery.id).state is DeliveryState.FINISHED
            pending = postroom.store.archive_counts(delivery.id).get(delivery.id, {}).get(
                ArchiveState.PENDING, 0)
            if done and (not bcc or pending == 0):
                break
            time.sleep(0.05)
        seconds = time.monotonic() - start
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    sent = postroom.reports.report(delivery.id).by_status.get("sent", 0)
    postroom.store.close()
    return sent, seconds


def _load(config: Path) -> Settings:
    return load_settings(config)


def _template(bcc: bool) -> str:
    return f"bench-bcc-{'on' if bcc else 'off'}"


Row = tuple[str, bool, int, int, float]  # store, Email BCC, workers, sent, seconds


def _measure_store(store: str, url: str, options: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="postroom-workers-") as tmp:
        folder = Path(tmp)
        if store == "sqlite":
            url = f"sqlite:///{folder / 'postroom.db'}"
        with Sink(folder, "relay") as relay, Sink(folder, "archive") as archive:
            config = _config(folder, url, relay, archive, options.connections)
            postroom = build(_load(config))
            postroom.recipients.import_recipients(_csv(folder, options.recipients))
            for bcc in (False, True):
                postroom.templates.create_template(_template(bcc), {
                    "subject": jinja(SUBJECT), "html": jinja(HTML), "text": jinja(TEXT),
                    "email_bcc": bcc, "inline_css": False})
            postroom.store.close()
            for bcc in options.bcc:
                for workers in (1, 2):
                    sent, seconds = measure(config, folder, workers, bcc)
                    rows.append((store, bcc, workers, sent, seconds))
                    print(f"{store}, Email BCC {'on' if bcc else 'off'}, {workers} worker(s): "
                          f"{sent:,} sent in {seconds:.1f} s = {sent / seconds:,.0f} msg/s",
                          flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--stores", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql")
    parser.add_argument("--bcc", default="off,on", help="comma-separated: off, on")
    parser.add_argument("--no-write", action="store_true")
    options = parser.parse_args()
    options.stores = [s for s in options.stores.split(",") if s]
    options.bcc = [b == "on" for b in options.bcc.split(",") if b in ("off", "on")]
    if not options.bcc or not set(options.stores) <= {"sqlite", "postgresql"}:
        parser.error("--stores takes sqlite, postgresql; --bcc takes off, on")
    rows: list[Row] = []
    for store in options.stores:
        if store == "sqlite":
            rows += _measure_store(store, "", options)
            continue
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"postroom_bench_{secrets.token_hex(4)}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            rows += _measure_store(store, PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", options)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
    text = _section(rows, options)
    print(text)
    if not options.no_write:
        _write(text)
    return 0


def _section(rows: list[Row], options: argparse.Namespace) -> str:
    command = (f"python bench/workers.py --recipients {options.recipients} --connections "
               f"{options.connections} --stores {','.join(options.stores)} --bcc "
               + ",".join("on" if b else "off" for b in options.bcc))
    lines = [SECTION, "",
             f"`{command}`: `postroom worker` processes with {options.connections} SMTP "
             "connections each, against one smtp-sink on loopback (the archive copies to a "
             "second one), on SQLite (WAL, a file in a temp folder) and PostgreSQL (local "
             "server). The clock runs from `deliveries start` until the delivery is finished "
             "and, with Email BCC on, every copy archived.", "",
             "| store | Email BCC | workers | sent | seconds | msg/s | vs 1 worker |",
             "|---|---|---:|---:|---:|---:|---:|"]
    base: dict[tuple[str, bool], float] = {}
    for store, bcc, workers, sent, seconds in rows:
        rate = sent / seconds
        base.setdefault((store, bcc), rate)
        lines.append(f"| {store} | {'on' if bcc else 'off'} | {workers} | {sent:,} | "
                     f"{seconds:.1f} | {rate:,.0f} | {rate / base[(store, bcc)]:.2f}x |")
    lines += ["", "Machine: " + "; ".join(f"{k}: {v}" for k, v in machine()), ""]
    return "\n".join(lines)


def _write(text: str) -> None:
    replace_section(SECTION, text)


if __name__ == "__main__":
    raise SystemExit(main())
