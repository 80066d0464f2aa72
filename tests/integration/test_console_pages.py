"""The console's pages, sessions and forgery checks through Starlette's TestClient, on SQLite
with a real capture SMTP server (the browser flows are in tests/browser/test_console.py)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():  # Starlette asks for `httpx2`, not in the offline index
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from postroom.testing.smtp_server import CaptureServer
from postroom.web.app import create_app
from tests.conftest import write_csv

PASSWORD = "correct horse battery staple"
ORIGIN = {"Origin": "http://testserver"}


@pytest.fixture
def postroom(make_postroom: Callable[..., Any], capture: Callable[..., CaptureServer],
             sqlite_url: str, tmp_path: Path) -> Any:
    postroom = make_postroom(sqlite_url, capture(), bcc=False)
    postroom.accounts.create_user("admin", "admin", PASSWORD)
    postroom.accounts.create_user("vera", "viewer", PASSWORD)
    postroom.recipients.import_recipients(write_csv(tmp_path / "r.csv", [
        {"email": "kim@example.org", "first_name": "<script>alert(1)</script>"}]))
    return postroom


@pytest.fixture
def client(postroom: Any) -> Iterator[TestClient]:
    with TestClient(create_app(postroom), follow_redirects=False) as client:
        yield client


def log_in(client: TestClient, name: str = "admin") -> str:
    response = client.post("/console/login", data={"name": name, "password": PASSWORD},
                           headers=ORIGIN)
    assert response.status_code == 303, response.text
    return csrf_of(client)


def csrf_of(client: TestClient) -> str:
    page: str = client.get("/console/").text
    marker = '"X-CSRF-Token": "'
    return page[page.index(marker) + len(marker):].split('"', 1)[0]


def test_pages_need_a_session(client: TestClient) -> None:
    for path in ("/console/", "/console/deliveries", "/console/recipients"):
        response = client.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/console/login"
    assert client.get("/console/deliveries", headers={"HX-Request": "true"}).status_code == 401


def test_log_in_sets_a_strict_http_only_cookie_and_log_out_ends_it(client: TestClient) -> None:
    response = client.post("/console/login", data={"name": "admin", "password": PASSWORD},
                           headers=ORIGIN)
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    csrf = csrf_of(client)
    session = client.cookies["postroom_session"]
    assert client.post("/console/logout", data={"csrf": csrf},
                       headers=ORIGIN).status_code == 303
    client.cookies.set("postroom_session", session)              # replaying the old cookie
    assert client.get("/console/").status_code == 303


def test_wrong_password_and_unknown_name_get_the_same_refusal(client: TestClient) -> None:
    wrong = client.post("/console/login", data={"name": "admin", "password": "nope"},
                        headers=ORIGIN)
    unknown = client.post("/console/login", data={"name": "nobody", "password": "nope"},
                          headers=ORIGIN)
    assert wrong.status_code == unknown.status_code == 401
    assert "wrong name or password" in wrong.text and "wrong name or password" in unknown.text
    assert "postroom_session" not in client.cookies


def test_repeated_failures_throttle_the_log_in(client: TestClient) -> None:
    for _ in range(10):
        response = client.post("/console/login", data={"name": "admin", "password": "x"},
                               headers=ORIGIN)
    assert response.status_code == 401
    right = client.post("/console/login", data={"name": "admin", "password": PASSWORD},
                        headers=ORIGIN)
    assert right.status_code == 401 and "postroom_session" not in client.cookies


def test_a_post_needs_the_consoles_origin_and_the_sessions_csrf_token(
        client: TestClient) -> None:
    assert client.post("/console/login", data={"name": "admin",
                                               "password": PASSWORD}).status_code == 403
    assert client.post("/console/login", data={"name": "admin", "password": PASSWORD},
                       headers={"Origin": "http://evil.example"}).status_code == 403
    csrf = log_in(client)
    data = {"name": "t1", "copy_of": "default"}
    assert client.post("/console/templates", data=data, headers=ORIGIN).status_code == 403
    assert client.post("/console/templates", data={**data, "csrf": "x" * 43},
                       headers=ORIGIN).status_code == 403
    assert client.post("/console/templates", data={**data, "csrf": csrf},
                       headers={"Origin": "http://evil.example"}).status_code == 403
    ok = client.post("/console/templates", data={**data, "csrf": csrf}, headers=ORIGIN)
    assert ok.status_code == 303 and ok.headers["location"] == "/console/templates/t1"
    # htmx sends the token as a header; the Referer stands in for a missing Origin
    assert client.post("/console/templates", data={"name": "t2", "copy_of": "default"},
                       headers={"X-CSRF-Token": csrf,
                                "Referer": "http://testserver/console/templates"}
                       ).status_code == 303


def test_every_page_renders_with_a_csp_and_escapes_recipient_data(client: TestClient) -> None:
    log_in(client)
    for path in ("/console/", "/console/deliveries", "/console/recipients",
                 "/console/recipients/history?email=kim@example.org", "/console/templates",
                 "/console/templates/default", "/console/quarantine", "/console/archive",
                 "/console/bounces", "/console/audit"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "<script>alert(1)" not in response.text, path
    assert "&lt;script&gt;alert(1)" in client.get("/console/recipients").text
    assert client.get("/console/static/htmx-2.0.4.min.js").status_code == 200


def test_the_preview_is_sandboxed_and_shows_the_recipients_data_escaped(
        client: TestClient) -> None:
    log_in(client)
    response = client.get("/console/templates/default/preview",
                          params={"recipient": "kim@example.org", "part": "html"})
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "sandbox" in policy and "script-src" not in policy
    assert "frame-ancestors 'self'" in policy
    assert "&lt;script&gt;alert(1)" in response.text


def test_a_viewer_is_refused_by_the_service_layer_and_sees_no_manage_forms(
        client: TestClient, postroom: Any) -> None:
    csrf = log_in(client, "vera")
    page = client.get("/console/templates").text
    assert 'id="create-template"' not in page
    response = client.post("/console/templates", data={"name": "x", "csrf": csrf},
                           headers=ORIGIN)
    assert response.status_code == 403 and "templates:manage" in response.text
    assert [t.name for t in postroom.templates.list_templates()] == ["default"]


def test_bad_input_gets_a_clear_refusal_not_a_500(client: TestClient) -> None:
    csrf = log_in(client)
    assert client.get("/console/deliveries/abc").status_code == 400
    assert client.get("/console/deliveries/999").status_code == 404
    assert client.get("/console/templates/nope").status_code == 404
    bad = client.post("/console/deliveries", data={"template": "nope", "csrf": csrf},
                      headers=ORIGIN)
    assert bad.status_code == 404
    assert client.get("/console/quarantine?status=bogus").status_code == 400
    empty = client.post("/console/recipients/import", data={"csrf": csrf}, headers=ORIGIN)
    assert empty.status_code == 400 and "choose a CSV file" in empty.text


def test_template_problems_are_shown_next_to_their_field(client: TestClient) -> None:
    csrf = log_in(client)
    client.post("/console/templates", data={"name": "t1", "csrf": csrf}, headers=ORIGIN)
    response = client.post("/console/templates/t1", headers=ORIGIN, data={
        "csrf": csrf, "subject": "Hello", "html": "<p>{% if %}</p>", "text": "fine"})
    assert response.status_code == 400
    page = response.text
    problems = page[page.index('data-field="html"'):]
    assert "html, line 1" in problems[:500]
    assert page.index('name="html"') < page.index('data-field="html"') < page.index(
        'name="text"')                                   # under the HTML field, not elsewhere
    assert "{% if %}" in page                             # what was typed is kept


def test_on_postgresql_a_send_is_left_to_workers_and_the_page_follows(
        make_postroom: Callable[..., Any], capture: Callable[..., CaptureServer],
        tmp_path: Path) -> None:
    import asyncio

    from tests.conftest import _postgres_url

    urls = _postgres_url()
    url = next(urls)
    try:
        relay = capture()
        postroom = make_postroom(url, relay, bcc=False)
        postroom.accounts.create_user("admin", "admin", PASSWORD)
        postroom.recipients.import_recipients(write_csv(tmp_path / "r.csv", [
            {"email": f"p{i}@example.org"} for i in range(5)]))
        postroom.templates.create_template("t", {"subject": "Hi", "html": "<p>Hi</p>",
                                                 "from_address": "news@shop.example"})
        delivery, _ = postroom.deliveries.create_delivery("t")
        with TestClient(create_app(postroom), follow_redirects=False) as client:
            csrf = log_in(client)
            started = client.post(f"/console/deliveries/{delivery.id}/send",
                                  headers={**ORIGIN, "X-CSRF-Token": csrf})
            assert started.status_code == 200 and 'id="state">sending<' in started.text
            assert 'hx-trigger="every 1s"' in started.text      # the page polls
            assert relay.messages == []                         # nothing sent by the server
            halt = asyncio.Event()
            asyncio.run(postroom.sending.work(halt, until_idle=True))
            followed = client.get(f"/console/deliveries/{delivery.id}/progress")
            assert 'id="state">finished<' in followed.text
            assert 'id="count-sent">5<' in followed.text
            assert "hx-trigger" not in followed.text            # polling stops
            postroom.close()
    finally:
        urls.close()


def test_an_operator_cannot_turn_email_bcc_off(client: TestClient, postroom: Any) -> None:
    postroom.accounts.create_user("otto", "operator", PASSWORD)
    postroom.templates.create_template("archived", {
        "subject": "Hi", "html": "<p>Hi</p>", "from_address": "news@shop.example",
        "email_bcc": True})
    csrf = log_in(client, "otto")
    editor = client.get("/console/templates/archived").text
    assert 'id="bcc-locked"' in editor                   # the switch is shown, locked on
    refused = client.post("/console/deliveries", headers=ORIGIN, data={
        "csrf": csrf, "template": "archived", "email_bcc": "off"})
    assert refused.status_code == 403 and "archive:manage" in refused.text
    assert postroom.deliveries.list_deliveries() == []
    made = client.post("/console/deliveries", headers=ORIGIN, data={
        "csrf": csrf, "template": "archived", "email_bcc": ""})
    assert made.status_code == 303
    [delivery] = postroom.deliveries.list_deliveries()
    assert delivery.properties.email_bcc is True


def test_pause_resume_and_stop_a_send_running_in_the_server(
        make_postroom: Callable[..., Any], capture: Callable[..., CaptureServer],
        sqlite_url: str, tmp_path: Path) -> None:
    import threading
    import time

    from postroom.testing.smtp_server import Hold, Script

    gate = threading.Event()
    relay = capture(script=Script().on_data(lambda _: True, Hold(gate)))
    postroom = make_postroom(sqlite_url, relay, bcc=False)
    postroom.accounts.create_user("sam", "sender", PASSWORD)
    postroom.recipients.import_recipients(write_csv(tmp_path / "r.csv", [
        {"email": f"p{i}@example.org"} for i in range(30)]))
    postroom.templates.create_template("t", {"subject": "Hi", "html": "<p>Hi</p>",
                                             "from_address": "news@shop.example"})
    delivery, _ = postroom.deliveries.create_delivery("t")
    url = f"/console/deliveries/{delivery.id}"
    try:
        with TestClient(create_app(postroom), follow_redirects=False) as client:
            csrf = log_in(client, "sam")
            post = {"headers": {**ORIGIN, "X-CSRF-Token": csrf}}
            sending = client.post(f"{url}/send", **post).text
            assert 'id="state">sending<' in sending and 'id="pause"' in sending
            paused = client.post(f"{url}/pause", **post).text
            assert 'id="state">paused<' in paused and 'id="resume"' in paused
            assert "hx-trigger" not in paused                    # nothing to follow
            resumed = client.post(f"{url}/resume", **post).text
            assert 'id="state">sending<' in resumed and 'hx-trigger="every 1s"' in resumed
            stopped = client.post(f"{url}/stop", **post).text
            assert 'id="state">stopped<' in stopped and 'id="resume"' not in stopped
            gate.set()
            deadline = time.monotonic() + 20
            while postroom.deliveries.pending_count(delivery.id) and time.monotonic() < deadline:
                time.sleep(0.05)
            [mount] = [r for r in client.app.routes  # type: ignore[attr-defined]
                       if getattr(r, "path", None) == "/console"]
            console = mount.app.state.console
            while console.tasks and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not console.tasks
    finally:
        gate.set()
    report = postroom.reports.report(delivery.id)
    assert str(report.delivery.state) == "stopped"
    assert report.by_status.get("pending", 0) == 0
    assert report.by_status.get("cancelled", 0) > 0               # the rest were never sent
    actions = [e.action for e in postroom.accounts.audit(limit=50)]
    for action in ("deliveries.pause", "deliveries.resume", "deliveries.stop"):
        assert action in actions


def test_add_test_and_delete_a_qualification_rule(client: TestClient, postroom: Any) -> None:
    csrf = log_in(client)
    reply = "550 5.7.1 Message rejected by ACME Shield policy #4711"
    added = client.post("/console/bounces/rules", headers=ORIGIN, data={
        "csrf": csrf, "rule_id": "acme-shield", "pattern": "ACME Shield", "status": "",
        "failure_type": "hard", "reason": "20", "position": "1", "description": "ACME"})
    assert added.status_code == 200 and "rule acme-shield added at position 1" in added.text
    tested = client.post("/console/bounces/test-rule", headers=ORIGIN,
                         data={"csrf": csrf, "text": reply})
    assert "Rule <b>acme-shield</b>" in tested.text
    bad = client.post("/console/bounces/rules", headers=ORIGIN, data={
        "csrf": csrf, "rule_id": "broken", "pattern": "(", "failure_type": "hard",
        "reason": "20"})
    assert bad.status_code == 400 and "not a valid regular expression" in bad.text
    gone = client.post("/console/bounces/rules/delete", headers=ORIGIN,
                       data={"csrf": csrf, "rule_id": "acme-shield"})
    assert gone.status_code == 200
    assert "acme-shield" not in [r.id for r in postroom.bounces.rules()]
    actions = [e.action for e in postroom.accounts.audit(limit=20)]
    assert "bounces.add_rule" in actions and "bounces.delete_rule" in actions


def test_resend_to_failures_makes_a_new_delivery_and_opens_it(
        make_postroom: Callable[..., Any], capture: Callable[..., CaptureServer],
        sqlite_url: str, tmp_path: Path) -> None:
    import asyncio

    from postroom.testing.smtp_server import Script

    relay = capture(script=Script().on_rcpt("gone@example.org", "550 5.1.1 No such user"))
    postroom = make_postroom(sqlite_url, relay, bcc=False)
    postroom.accounts.create_user("sam", "sender", PASSWORD)
    postroom.accounts.create_user("otto", "operator", PASSWORD)
    postroom.recipients.import_recipients(write_csv(tmp_path / "r.csv", [
        {"email": "kim@example.org"}, {"email": "gone@example.org"}]))
    postroom.templates.create_template("t", {"subject": "Hi", "html": "<p>Hi</p>",
                                             "from_address": "news@shop.example"})
    delivery, _ = postroom.deliveries.create_delivery("t")
    postroom.deliveries.start(delivery.id)
    asyncio.run(postroom.sending.send(delivery.id))
    url = f"/console/deliveries/{delivery.id}"
    with TestClient(create_app(postroom), follow_redirects=False) as client:
        csrf = log_in(client, "otto")                       # cannot deliveries:send
        assert 'id="resend"' not in client.get(url).text
        refused = client.post(f"{url}/resend", data={"csrf": csrf}, headers=ORIGIN)
        assert refused.status_code == 403 and "deliveries:send" in refused.text
        client.post("/console/logout", data={"csrf": csrf}, headers=ORIGIN)

        csrf = log_in(client, "sam")
        page = client.get(url).text
        assert 'id="state">finished<' in page and 'id="resend"' in page
        assert client.post(f"{url}/resend", data={"csrf": csrf}).status_code == 403  # no Origin
        none = client.post(f"{url}/resend", data={"csrf": csrf}, headers=ORIGIN)
        assert none.status_code == 400 and "no failed recipient" in none.text  # in quarantine
        postroom.quarantine.release_addresses(["gone@example.org"])
        made = client.post(f"{url}/resend", data={"csrf": csrf}, headers=ORIGIN)
        assert made.status_code == 303
        [new] = [d for d in postroom.deliveries.list_deliveries() if d.id != delivery.id]
        assert made.headers["location"] == f"/console/deliveries/{new.id}"
        assert "(resend)" in client.get(made.headers["location"]).text
        assert 'id="resend"' not in client.get(made.headers["location"]).text  # not finished
    actions = [e.action for e in postroom.accounts.audit(limit=20)]
    assert "deliveries.resend" in actions


def test_denylist_addresses_from_the_quarantine_page(client: TestClient, postroom: Any) -> None:
    csrf = log_in(client, "vera")                            # a viewer: no form, refused
    assert 'id="denylist-form"' not in client.get("/console/quarantine").text
    refused = client.post("/console/quarantine/denylist", headers=ORIGIN,
                          data={"csrf": csrf, "addresses": "kim@example.org"})
    assert refused.status_code == 403 and "quarantine:manage" in refused.text
    assert postroom.quarantine.get_address("kim@example.org") is None
    client.post("/console/logout", data={"csrf": csrf}, headers=ORIGIN)

    csrf = log_in(client)
    assert 'id="denylist-form"' in client.get("/console/quarantine").text
    assert client.post("/console/quarantine/denylist", data={
        "csrf": csrf, "addresses": "kim@example.org"}).status_code == 403  # no Origin
    done = client.post("/console/quarantine/denylist", headers=ORIGIN, data={
        "csrf": csrf, "addresses": "kim@EXAMPLE.org, spam@example.net"})
    assert done.status_code == 200 and "2 of 2 address(es) put on the denylist" in done.text
    assert "spam@example.net" in done.text
    assert postroom.quarantine.get_address("kim@example.org").status == "denylisted"
    again = client.post("/console/quarantine/denylist", headers=ORIGIN,
                        data={"csrf": csrf, "addresses": "kim@example.org"})
    assert "0 of 1" in again.text and "on it already" in again.text
    empty = client.post("/console/quarantine/denylist", headers=ORIGIN,
                        data={"csrf": csrf, "addresses": " "})
    assert empty.status_code == 400 and "name the addresses to denylist" in empty.text
    assert "quarantine.denylist" in [e.action for e in postroom.accounts.audit(limit=20)]


def test_a_delivery_s_page_charts_its_throughput_over_time(postroom: Any,
                                                         client: TestClient) -> None:
    """The chart's bars are the report's buckets: one per second here, the tallest the busiest
    second; a delivery sent within one second has the figure only, no chart."""
    from datetime import timedelta

    from postroom.domain.models import LogUpdate
    from postroom.domain.states import DeliveryState, LogStatus

    postroom.templates.create_template("t", {"subject": "Hi", "text": "x\n"})
    delivery, _ = postroom.deliveries.create_delivery("t")
    assert postroom.deliveries.analyze(delivery.id).ok
    store, now = postroom.store, postroom.clock()
    store.move_delivery(delivery.id, DeliveryState.SENDING, now)
    [target] = store.claim_due(delivery.id, now, 10, timedelta(seconds=60), worker="w")
    store.mark_attempting([target.log_id], worker="w", now=now)
    store.record([LogUpdate(log_id=target.log_id, status=LogStatus.SENT, attempts=1,
                            next_attempt_at=None, smtp_reply="250 OK", sent_at=now,
                            archive_data=None, sha256=None)], now)
    log_in(client)
    single = client.get(f"/console/deliveries/{delivery.id}").text
    assert 'id="throughput-chart"' not in single
    more = [{"email": f"p{i}@example.org"} for i in range(3)]
    postroom.recipients.import_recipients(write_csv(Path(str(store.engine.url.database))
                                                    .with_name("more.csv"), more))
    second, _ = postroom.deliveries.create_delivery("t", name="second")
    assert postroom.deliveries.analyze(second.id).ok
    now = postroom.clock()  # after the analysis: its logs are due from then
    store.move_delivery(second.id, DeliveryState.SENDING, now)
    taken = store.claim_due(second.id, now, 10, timedelta(seconds=60), worker="w")
    assert len(taken) == 4
    store.mark_attempting([t.log_id for t in taken], worker="w", now=now)
    store.record([LogUpdate(log_id=t.log_id, status=LogStatus.SENT, attempts=1,
                            next_attempt_at=None, smtp_reply="250 OK",
                            sent_at=now + timedelta(seconds=offset), archive_data=None,
                            sha256=None)
                  for t, offset in zip(taken, [0, 0, 0, 2], strict=True)], now)
    page = client.get(f"/console/deliveries/{second.id}").text
    chart = page[page.index('id="throughput-chart"'):page.index("</figure>")]
    assert chart.count("<rect") == 3                      # 0-1 s, 1-2 s, 2 s to the last
    assert "<title>3.0 messages/s</title>" in chart and "<title>0.0 messages/s</title>" in chart
    assert ">3.0/s<" in chart                             # the scale: the busiest second


def test_a_disabled_account_s_session_ends_and_a_changed_role_applies_at_once(
        postroom: Any, client: TestClient) -> None:
    """The session holds who logged in, not what they may do: each request reads the account
    as it stands (a role changed in the database applies; a disabled account is logged out)."""
    from sqlalchemy import update

    from postroom.storage.schema import users

    postroom.accounts.create_user("otto", "viewer", PASSWORD)
    log_in(client, "otto")
    assert 'action="/console/templates"' not in client.get("/console/templates").text
    with postroom.store.engine.begin() as conn:
        conn.execute(update(users).where(users.c.name == "otto").values(role="operator"))
    assert 'action="/console/templates"' in client.get("/console/templates").text
    postroom.accounts.disable_user("otto")
    gone = client.get("/console/")
    assert gone.status_code == 303 and gone.headers["location"] == "/console/login"
    assert client.get("/console/", headers={"HX-Request": "true"}).status_code == 401


def test_an_import_runs_in_the_background_and_the_page_follows_it(
        postroom: Any, client: TestClient, tmp_path: Path) -> None:
    """The upload starts the import and the page follows it: the rows written so far while
    it runs (the panel polls), then the per-row report; only its own session sees it; a file
    the importer refuses says why on the same panel; no spooled file is left behind."""
    import glob
    import re
    import tempfile
    import threading
    import time

    csrf = log_in(client)
    gate, second = threading.Event(), threading.Event()
    upsert = postroom.store.upsert_recipients
    calls: list[int] = []

    def held(rows: Any, now: Any) -> Any:  # the second batch waits until the test has looked
        calls.append(len(rows))
        if len(calls) == 2:
            second.set()  # the first batch is written and counted by now
            assert gate.wait(30)
        return upsert(rows, now)

    rows = "".join(f"p{i}@example.net,P{i}\n" for i in range(1500)) + "not-an-address,X\n"
    spooled = set(glob.glob(f"{tempfile.gettempdir()}/postroom-import-*"))
    try:
        postroom.store.upsert_recipients = held
        started = client.post("/console/recipients/import", headers=ORIGIN, data={"csrf": csrf},
                              files={"file": ("people.csv", "email,first_name\n" + rows,
                                              "text/csv")})
        assert started.status_code == 303
        location = started.headers["location"]
        job = location.split("import=", 1)[1]
        assert second.wait(30)
        page = client.get(location).text
        assert 'id="import-progress"' in page and 'hx-trigger="every 1s"' in page
        assert re.search(r'id="import-written">1000<', page)   # the first batch is written
        other = TestClient(client.app, follow_redirects=False)
        log_in(other, "admin")                                 # another session of the same user
        assert other.get(f"/console/recipients/import/{job}").status_code == 404
    finally:
        gate.set()
        postroom.store.upsert_recipients = upsert
    deadline = time.monotonic() + 30
    while 'id="import-report"' not in (panel := client.get(
            f"/console/recipients/import/{job}").text):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert re.search(r"1501 rows: <b>1500</b> new, <b>0</b> updated,\s+<b[^>]*>1</b> rejected",
                     panel)
    assert "hx-trigger" not in panel                          # the polling stops
    assert set(glob.glob(f"{tempfile.gettempdir()}/postroom-import-*")) == spooled

    refused = client.post("/console/recipients/import", headers=ORIGIN, data={"csrf": csrf},
                          files={"file": ("bad.csv", b"first_name\nNo email column\n",
                                          "text/csv")})
    job = refused.headers["location"].split("import=", 1)[1]
    deadline = time.monotonic() + 30
    while 'id="import-report"' not in (panel := client.get(
            f"/console/recipients/import/{job}").text):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert 'id="import-error"' in panel and "email" in panel.split('id="import-error"')[1]


def test_recipients_are_narrowed_by_an_audience_filter(postroom: Any, client: TestClient,
                                                       tmp_path: Path) -> None:
    postroom.recipients.import_recipients(write_csv(tmp_path / "c.csv", [
        {"email": "lyon@example.net", "city": "Lyon"},
        {"email": "paris@example.net", "city": "Paris"}]))
    log_in(client)
    page = client.get("/console/recipients", params={"filter": "city=Lyon"}).text
    assert "lyon@example.net" in page and "paris@example.net" not in page
    assert "(1 matching)" in page
    bad = client.get("/console/recipients", params={"filter": "city Lyon"})
    assert bad.status_code == 400 and "FIELD=VALUE" in bad.text
