"""CPU cost of rendering one recipient's message: `Plan.render` alone, no IO (issue 6).

    python bench/render.py [--recipients N] [--repeat R] [--top K] [--dkim] [--no-profile]

Builds the plan the way the service does (`Planner` from the instance settings, the bench's
template properties) and renders N recipients of bench/throughput_data.py (the ~5 KB
multipart/alternative newsletter, five personalized fields incl. the subject; recipients as the
store returns them after import: normalized address, custom fields `city` and `member_id`).
Prints the best of R timed runs in µs per message, then the top K functions of a cProfile run
(by own time). `--dkim` adds a DKIM signer for the From domain (a 2048-bit RSA key).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(Path(__file__).resolve().parent)]

from throughput_data import (  # noqa: E402 - after the path set-up above
    ERRORS_TO,
    FROM_ADDRESS,
    FROM_NAME,
    HTML,
    SUBJECT,
    TEXT,
    jinja,
    recipients,
)

from postroom.compose.dkim import DkimSigner  # noqa: E402
from postroom.delivery.plan import Links, Plan, Planner  # noqa: E402
from postroom.domain.models import Audience, Delivery, Recipient, Target  # noqa: E402
from postroom.domain.properties import parse_properties  # noqa: E402
from postroom.domain.states import DeliveryState  # noqa: E402
from postroom.settings import DefaultsSettings, SendingSettings, WebSettings  # noqa: E402

NOW = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def _signer() -> DkimSigner:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return DkimSigner(FROM_ADDRESS.rpartition("@")[2], "bench", pem)


def make_plan(*, dkim: bool = False) -> Plan:
    """The bench delivery's plan, as `wiring.build` + `Postroom.send` would make it."""
    web = WebSettings()
    domain = FROM_ADDRESS.rpartition("@")[2]
    planner = Planner(
        defaults=DefaultsSettings(from_name=FROM_NAME, from_address=FROM_ADDRESS,
                                  errors_to=ERRORS_TO),
        sending=SendingSettings(),
        links=Links(web.base_url, b"0123456789abcdef" * 4, web.unsubscribe_mailto),
        archive_available=False,
        resource_validity_days=web.resource_validity_days,
        signers={domain: _signer()} if dkim else None,
    )
    properties = parse_properties({"subject": jinja(SUBJECT), "html": jinja(HTML),
                                   "text": jinja(TEXT), "format": "multipart",
                                   "email_bcc": False}, source="bench")
    delivery = Delivery(
        id=1, name="render bench", template_name="bench-newsletter",
        state=DeliveryState.SENDING, properties=properties, audience=Audience(),
        salt="Qm9vdHN0cmFw", last_error="", created_at=NOW - timedelta(hours=1),
        analyzed_at=NOW - timedelta(minutes=5), started_at=NOW)
    return planner(delivery)


def targets(count: int) -> list[Target]:
    return [Target(log_id=n + 1, attempts=0, recipient=Recipient(
        id=n + 1, email=row["email"], first_name=row["first_name"],
        last_name=row["last_name"],
        fields={"city": row["city"], "member_id": row["member_id"]}))
        for n, row in enumerate(recipients(count))]


def render_all(plan: Plan, batch: list[Target]) -> int:
    size = 0
    for target in batch:
        size += len(plan.render(target, NOW).data)
    return size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--dkim", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args(argv)

    plan = make_plan(dkim=args.dkim)
    batch = targets(args.recipients)
    render_all(plan, batch[:200])  # warm-up: imports, caches
    best = float("inf")
    size = 0
    for _ in range(args.repeat):
        started = time.process_time()
        size = render_all(plan, batch)
        best = min(best, time.process_time() - started)
    per_message = best / len(batch) * 1e6
    print(f"{len(batch)} messages, {size / len(batch):,.0f} bytes on average"
          f"{', DKIM-signed' if args.dkim else ''}: {per_message:,.1f} µs CPU per message "
          f"(best of {args.repeat}), {len(batch) / best:,.0f} messages/s")
    if args.no_profile:
        return 0
    profile = cProfile.Profile()
    profile.enable()
    render_all(plan, batch)
    profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(args.top)
    print(out.getvalue().split("\n", 3)[-1].rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
