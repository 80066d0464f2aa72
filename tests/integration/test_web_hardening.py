"""The web server against a hostile client (issue 12): request bodies are bounded and the token
is checked before any is read, pages carry security headers, `/health` tells the public only
ok / not ok. A real uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from postroom.app import Postroom
from postroom.settings import WebSettings
from postroom.testing.smtp_server import CaptureServer
from postroom.web.app import MAX_BODY_BYTES
from tests.conftest import write_csv
from tests.integration.web_server import serving

TOKEN = "health-" + "t" * 32


@pytest.fixture
def relay(capture: Callable[..., CaptureServer]) -> CaptureServer:
    return capture()


@pytest.fixture
def postroom(make_postroom: Callable[..., Postroom], sqlite_url: str,
             relay: CaptureServer) -> Postroom:
    return make_postroom(sqlite_url, relay, bcc=False,
                         web=WebSettings(health_token=TOKEN))


@pytest.fixture
def web(postroom: Postroom) -> Iterator[httpx.Client]:
    with serving(postroom) as client:
        yield client


def _sent(postroom: Postroom, tmp_path: Path, html: str, **fields: str) -> int:
    postroom.recipients.import_recipients(write_csv(tmp_path / "r.csv", [
        {"email": "kim@example.org", "first_name": "Kim", **fields}]))
    postroom.templates.create_template("t", {"subject": "Hi", "html": html,
                                             "from_address": "news@shop.example"})
    delivery, _ = postroom.deliveries.create_delivery("t")
    asyncio.run(postroom.sending.send(delivery.id))
    [log] = postroom.deliveries.logs(delivery.id)
    return log.id


class _Body:
    """A large streamed request body that counts what the client managed to send."""

    def __init__(self, megabytes: int):
        self.megabytes = megabytes
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        chunk = b"List-Unsubscribe=One-Click&" + b"x" * (1 << 20)
        for _ in range(self.megabytes):
            self.sent += len(chunk)
            yield chunk


def _post(web: httpx.Client, path: str, body: _Body,
          headers: dict[str, str] | None = None) -> int | None:
    """The status, or None when the server closed the connection before taking it all."""
    try:
        return web.post(path, content=body, headers={
            "content-type": "application/x-www-form-urlencoded", **(headers or {})}).status_code
    except httpx.TransportError:
        return None


def test_the_token_is_checked_before_the_body_is_read(
    postroom: Postroom, tmp_path: Path, web: httpx.Client,
) -> None:
    """Finding 4: the form was parsed (a 2 GB file part spooled to disk) before the token."""
    log_id = _sent(postroom, tmp_path, "<p>Hi</p>")
    good = httpx.URL(postroom.planner.links.unsubscribe_url(log_id)).path
    forged = f"/u/{log_id + 1}.{good.rsplit('.', 1)[1]}"
    body = _Body(300)
    assert _post(web, forged, body) in (404, None)
    assert body.sent < 100 << 20  # the server stopped reading; it would have taken 300 MB


@pytest.mark.parametrize("declared", [True, False])
def test_large_bodies_get_413_before_they_are_read(
    postroom: Postroom, tmp_path: Path, web: httpx.Client, declared: bool,
) -> None:
    log_id = _sent(postroom, tmp_path, "<p>Hi</p>")
    path = httpx.URL(postroom.planner.links.unsubscribe_url(log_id)).path
    body = _Body(300)
    headers = {"content-length": str(300 * ((1 << 20) + 27))} if declared else {}
    assert _post(web, path, body, headers) in (413, None)
    assert body.sent < 100 << 20
    recipient = postroom.store.recipient_by_email("kim@example.org")
    assert recipient is not None and not recipient.opted_out
    # A one-click POST, urlencoded or multipart (RFC 8058 prefers it), is well under the limit.
    reply = web.post(path, files={"List-Unsubscribe": (None, "One-Click")})
    assert reply.status_code == 200
    assert len(b"List-Unsubscribe=One-Click") < 300 < MAX_BODY_BYTES
    recipient = postroom.store.recipient_by_email("kim@example.org")
    assert recipient is not None and recipient.opted_out


def test_pages_carry_security_headers_and_script_links_are_dead(
    postroom: Postroom, tmp_path: Path, web: httpx.Client,
) -> None:
    log_id = _sent(postroom, tmp_path,
                   '<a href="{{ recipient.site }}">my site</a> <a href="{{ mirror_url }}">web</a>',
                   site="javascript:alert(document.domain)")
    mirror = web.get(httpx.URL(postroom.links.mirror_url(log_id)).path)
    assert mirror.status_code == 200 and 'href="javascript:alert' in mirror.text
    unsubscribe_path = httpx.URL(postroom.planner.links.unsubscribe_url(log_id)).path
    for response in (mirror, web.get(unsubscribe_path), web.get("/m/1.forged")):
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"  # the token must not leak
        assert headers["x-frame-options"] == "DENY"
        policy = [d.strip() for d in headers["content-security-policy"].split(";")]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert not any(d.startswith("script-src") for d in policy)  # no script at all
    mirror_policy = mirror.headers["content-security-policy"]
    # The mirror page is a sandbox: an opaque origin where no script runs, so the recipient's
    # `javascript:` link is neither live nor on Postroom's origin.
    [sandbox] = [d.strip() for d in mirror_policy.split(";")
                 if d.strip().startswith("sandbox")]
    assert "allow-scripts" not in sandbox and "allow-same-origin" not in sandbox


def test_health_tells_the_public_only_ok_or_not(
    postroom: Postroom, web: httpx.Client,
) -> None:
    public = web.get("/health")
    assert public.status_code == 200 and public.json() == {"status": "ok"}
    for wrong in ("Bearer nope", "Basic " + TOKEN, "Bearer " + TOKEN[:-1]):
        assert web.get("/health", headers={"authorization": wrong}).json() == {"status": "ok"}
    full = web.get("/health", headers={"authorization": f"Bearer {TOKEN}"}).json()
    assert full["status"] == "ok" and full["database"] is True and "archive" in full
