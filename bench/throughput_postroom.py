"""The Postroom side of bench/throughput.py: one measurement per child process.

    python bench/throughput_postroom.py SPEC.json

SPEC.json says what to do (`prepare`: write the audience CSV, import it, quarantine addresses,
create the template and the delivery, analyze; `send`: send a prepared delivery) and where; the
child writes its figures as JSON to the spec's `result` path. One process per measurement keeps
each one's peak RSS (the parent reads it with os.wait4) and caches apart. Only Postroom's public
service API is used: `wiring.build(Settings(...))`, then import, templates, deliveries, analyze,
send, report, archive_flush.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(Path(__file__).resolve().parent)]

from sqlalchemy import insert  # noqa: E402 - after the path set-up above
from throughput_data import (  # noqa: E402
    ARCHIVE_ADDRESS,
    ERRORS_TO,
    FROM_ADDRESS,
    FROM_NAME,
    HTML,
    SUBJECT,
    TEXT,
    jinja,
    write_audience,
)

from postroom.app import Postroom  # noqa: E402
from postroom.app.children import warm  # noqa: E402
from postroom.settings import (  # noqa: E402
    ArchiveSettings,
    DefaultsSettings,
    SendingSettings,
    Settings,
    SmtpRelay,
)
from postroom.storage.schema import address_status  # noqa: E402
from postroom.wiring import build  # noqa: E402

TEMPLATE = "bench-newsletter"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def _settings(spec: dict[str, Any]) -> Settings:
    bcc = bool(spec["bcc"])
    return Settings(
        database_url=f"sqlite:///{spec['db']}",
        smtp=SmtpRelay(host="127.0.0.1", port=spec["relay_port"]),
        sending=SendingSettings(connections=spec["connections"],
                                processes=int(spec.get("processes", 1))),
        defaults=DefaultsSettings(from_name=FROM_NAME, from_address=FROM_ADDRESS,
                                  errors_to=ERRORS_TO),
        archive=ArchiveSettings(enabled=bcc, bcc_address=[ARCHIVE_ADDRESS] if bcc else [],
                                relay=SmtpRelay(host="127.0.0.1", port=spec["archive_port"]),
                                own_process=bool(spec.get("archive_process"))),
    )


def _service(spec: dict[str, Any]) -> Postroom:
    return build(_settings(spec))


def _quarantine(postroom: Postroom, addresses: list[str]) -> None:
    """Put addresses in quarantine as the bounce processing leaves them (address_status rows)."""
    now = datetime.now(UTC)
    rows = [{"address": a, "domain": a.rpartition("@")[2], "status": "quarantine",
             "error_count": 5, "first_error_at": now, "last_error_at": now, "last_reason": None,
             "last_type": "soft", "last_text": "bench: quarantined", "status_since": now,
             "updated_at": now} for a in addresses]
    with postroom.store.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(address_status), rows[start:start + 5000])


def _timed(profile: cProfile.Profile | None, call: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    if profile is not None:
        profile.enable()
    try:
        value = call()
    finally:
        if profile is not None:
            profile.disable()
    return time.perf_counter() - start, value


def prepare(spec: dict[str, Any], profile: cProfile.Profile | None) -> dict[str, Any]:
    folder = Path(spec["dir"])
    started = time.perf_counter()
    audience = write_audience(folder / "audience.csv", spec["size"],
                              duplicates=spec["duplicates"], quarantined=spec["quarantined"])
    csv_seconds = time.perf_counter() - started
    postroom = _service(spec)
    try:
        import_seconds, imported = _timed(None, lambda: postroom.recipients.import_recipients(
            audience.path))
        _quarantine(postroom, audience.quarantined)
        postroom.templates.create_template(TEMPLATE, {
            "subject": jinja(SUBJECT), "html": jinja(HTML), "text": jinja(TEXT),
            "format": "multipart", "email_bcc": bool(spec["bcc"])})
        delivery, _ = postroom.deliveries.create_delivery(TEMPLATE, name="throughput bench")
        analyze_seconds, report = _timed(profile, lambda: postroom.deliveries.analyze(delivery.id))
    finally:
        postroom.store.close()
    problems = list(report.errors)
    if imported.inserted != audience.rows:
        problems.append(f"imported {imported.inserted} of {audience.rows} rows "
                        f"({imported.rejected} rejected)")
    if report.pending != audience.to_send:
        problems.append(f"analysis: {report.pending} to send, expected {audience.to_send}")
    return {
        "delivery_id": delivery.id, "rows": audience.rows, "duplicates": audience.duplicates,
        "quarantined": len(audience.quarantined), "csv_seconds": csv_seconds,
        "import_seconds": import_seconds, "analyze_seconds": analyze_seconds,
        "targets": report.targets, "to_send": report.pending,
        "excluded": {reason.label: n for reason, n in report.excluded.items()},
        "problems": problems, "rss_mb_self": _rss_mb(),
    }


def send(spec: dict[str, Any], profile: cProfile.Profile | None) -> dict[str, Any]:
    # As `postroom deliveries send` does: the fork server of the helper or archive processes
    # starts before the application is built (app/children.py), and imports meanwhile.
    settings = _settings(spec)
    warm(settings)
    postroom = build(settings)
    baseline = _rss_mb()
    delivery_id = spec["delivery_id"]
    bcc = bool(spec["bcc"])

    def run() -> tuple[Any, int]:
        summary = asyncio.run(postroom.sending.send(delivery_id))
        pending = summary.archive_pending
        if bcc and pending:  # the archive must be complete before the clock stops
            pending = asyncio.run(postroom.archive.flush(delivery_id=delivery_id,
                                                         wait_seconds=600.0))
        return summary, pending

    try:
        cpu_before = _cpu_seconds()
        seconds, (summary, archive_pending) = _timed(profile, run)
        cpu_seconds = _cpu_seconds() - cpu_before
        report = postroom.reports.report(delivery_id)
        sizes = [log.size for log in postroom.deliveries.logs(delivery_id, status="sent", limit=500)
                 if log.size]
    finally:
        postroom.store.close()
    sent = report.by_status.get("sent", 0)
    archived = report.archive.get("archived", 0)
    problems = []
    if sent != spec["expected"]:
        problems.append(f"sent {sent}, expected {spec['expected']} "
                        f"(by status: {dict(report.by_status)})")
    problems.extend(summary.helper_errors)  # a helper that failed (its share sent by others)
    if bcc and (archived != sent or archive_pending):
        problems.append(f"archive: {archived} archived for {sent} sent, "
                        f"{archive_pending} pending")
    return {
        "seconds": seconds, "cpu_seconds": cpu_seconds, "sent": sent, "failed": summary.failed,
        "deferred": summary.deferred, "archived": archived, "archive_pending": archive_pending,
        "state": str(summary.state), "report_throughput": report.throughput,
        "avg_size": sum(sizes) / len(sizes) if sizes else 0,
        "rss_mb_baseline": baseline, "rss_mb_self": _rss_mb(), "problems": problems,
    }


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    profile = cProfile.Profile() if spec.get("profile") else None
    result = prepare(spec, profile) if spec["mode"] == "prepare" else send(spec, profile)
    if profile is not None:
        profile.dump_stats(spec["profile"])
    Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
