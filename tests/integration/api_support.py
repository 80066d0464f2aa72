"""A Postroom instance behind its real web server, with one API token per shipped role."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from postroom.accounts.permissions import ROLES
from postroom.settings import (
    ArchiveSettings,
    SendingSettings,
    Settings,
    SmtpRelay,
    WebSettings,
)
from postroom.testing.smtp_server import CaptureServer
from postroom.wiring import build
from tests.conftest import ARCHIVE, write_csv
from tests.integration.web_server import serving

ROLE_NAMES = tuple(ROLES)  # admin, operator, sender, viewer, compliance
BCC_TEMPLATE = "with-bcc"
PEOPLE = [{"email": f"p{i}@example.com", "first_name": f"P{i}"} for i in range(3)]


@dataclass
class Api:
    client: httpx.Client
    postroom: Any
    relay: CaptureServer
    tokens: dict[str, str]
    tmp: Path
    made: list[int] = field(default_factory=list)

    def headers(self, role: str | None) -> dict[str, str]:
        return {} if role is None else {"Authorization": f"Bearer {self.tokens[role]}"}

    def request(self, role: str | None, method: str, path: str, **kwargs: Any
                ) -> httpx.Response:
        return self.client.request(method, "/api/v1" + path, headers=self.headers(role),
                                   **kwargs)

    def delivery(self, state: str = "editing", template: str = "plain") -> int:
        """A new delivery (made through the raw services, not the API) in `state`."""
        services = self.postroom
        delivery, _ = services.deliveries.create_delivery(template)
        if state in ("ready", "sending", "paused"):
            assert services.deliveries.analyze(delivery.id).ok
        if state in ("sending", "paused"):
            services.deliveries.start(delivery.id)
        if state == "paused":
            services.deliveries.pause(delivery.id)
        return int(delivery.id)


def api_settings(database_url: str, relay: CaptureServer, **web: Any) -> Settings:
    return Settings(
        database_url=database_url,
        smtp=SmtpRelay(host="127.0.0.1", port=relay.port, timeout_seconds=5),
        sending=SendingSettings(connections=2, quick_retry_seconds=0.05,
                                wait_for_retries_seconds=5),
        archive=ArchiveSettings(enabled=True, bcc_address=[ARCHIVE], drain_seconds=5,
                                max_backoff_seconds=0.2),
        web=WebSettings(**{"api_max_json_bytes": 64 * 1024,
                           "api_max_upload_bytes": 256 * 1024, **web}))


@contextmanager
def api_instance(tmp: Path, database_url: str | None = None, **web: Any) -> Iterator[Api]:
    """A fresh instance on its own database (a SQLite file unless given) and capture relay,
    served by uvicorn."""
    with CaptureServer() as relay:
        postroom = build(api_settings(database_url or f"sqlite:///{tmp / 'api.db'}", relay,
                                      **web))
        try:
            postroom.recipients.import_recipients(write_csv(tmp / "people.csv", PEOPLE))
            postroom.templates.create_template("plain", {
                "subject": "Hello {{ recipient.first_name }}",
                "from_address": "news@example.org",
                "html": "<p>Hi {{ recipient.first_name }}</p>"})
            postroom.templates.create_template(BCC_TEMPLATE, {
                "subject": "Kept", "from_address": "news@example.org", "html": "<p>Kept</p>",
                "email_bcc": True})
            tokens = {}
            accounts = postroom.accounts
            for role in ROLE_NAMES:  # token holders only: no password (argon2 costs ~0.5 s)
                accounts.store.create_user(f"{role}-user", role, "!no password",
                                           postroom.clock())
                tokens[role] = accounts.create_token(f"{role}-user").token
            with serving(postroom) as client:
                yield Api(client=client, postroom=postroom, relay=relay, tokens=tokens,
                          tmp=tmp)
        finally:
            postroom.close()
