"""The REST API against a real SQLite store, served by uvicorn, with a real SMTP capture relay:
every endpoint x every shipped role (401 without a token, 403 naming the missing permission,
success with it), and the permission each needs is the service layer's (policy.REQUIRED)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from postroom.accounts.permissions import ROLES
from postroom.accounts.policy import REQUIRED
from postroom.web.api import create_api
from tests.integration.api_support import ROLE_NAMES, Api, api_instance

PROBLEM = "application/problem+json"
_serial = itertools.count(1)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with api_instance(tmp_path) as instance:
        yield instance


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One instance for the role matrix: every case makes the objects it changes."""
    with api_instance(tmp_path_factory.mktemp("api")) as instance:
        yield instance


@dataclass(frozen=True)
class Case:
    method: str
    route: str                      # as the OpenAPI schema names it
    key: str                        # the service method whose permission it needs
    status: int = 200
    state: str | None = None        # a fresh delivery in this state fills {delivery_id}
    body: Callable[[], dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def path(self, api: Api) -> str:
        values: dict[str, Any] = {"name": "plain", "address": "held@example.com"}
        if self.state is not None:
            values["delivery_id"] = api.delivery(self.state)
        if self.key == "quarantine.release_addresses":
            api.postroom.quarantine.denylist(["held@example.com"])
        return self.route.format(**values)

    def send(self, api: Api, role: str | None) -> Any:
        kwargs = dict(self.extra)
        if self.body is not None:
            kwargs["json"] = self.body()
        if self.key == "recipients.import_recipients":
            kwargs["files"] = {"file": ("people.csv", b"email,first_name\nnew@example.com,N\n",
                                        "text/csv")}
        return api.request(role, self.method, self.path(api), **kwargs)


CASES = [
    Case("POST", "/recipients/import", "recipients.import_recipients"),
    Case("GET", "/recipients", "recipients.list_recipients"),
    Case("GET", "/templates", "templates.list_templates"),
    Case("POST", "/templates", "templates.create_template", 201,
         body=lambda: {"name": f"made-{next(_serial)}",
                       "properties": {"subject": "S", "html": "<p>x</p>"}}),
    Case("GET", "/templates/{name}", "templates.get_template"),
    Case("PATCH", "/templates/{name}", "templates.update_template",
         body=lambda: {"subject": f"Changed {next(_serial)}"}),
    Case("POST", "/templates/{name}/duplicate", "templates.duplicate_template", 201,
         body=lambda: {"new_name": f"copy-{next(_serial)}"}),
    Case("POST", "/deliveries", "deliveries.create_delivery", 201,
         body=lambda: {"template": "plain", "name": "from the API"}),
    Case("GET", "/deliveries", "deliveries.list_deliveries"),
    Case("GET", "/deliveries/{delivery_id}", "reports.report", state="editing"),
    Case("GET", "/deliveries/{delivery_id}/logs", "deliveries.logs", state="ready"),
    Case("POST", "/deliveries/{delivery_id}/analyze", "deliveries.analyze", state="editing"),
    Case("POST", "/deliveries/{delivery_id}/proof", "proofs.proof", state="editing",
         body=lambda: {"to": ["proof@example.com"]}),
    Case("POST", "/deliveries/{delivery_id}/send", "deliveries.start", 202, state="ready"),
    Case("POST", "/deliveries/{delivery_id}/pause", "deliveries.pause", state="sending"),
    Case("POST", "/deliveries/{delivery_id}/resume", "deliveries.resume", state="paused"),
    Case("POST", "/deliveries/{delivery_id}/stop", "deliveries.stop", state="sending"),
    Case("GET", "/deliveries/{delivery_id}/events", "reports.report", state="ready"),
    Case("GET", "/quarantine", "quarantine.list_addresses"),
    Case("POST", "/quarantine/{address}/release", "quarantine.release_addresses"),
    Case("GET", "/rules", "bounces.rules"),
    Case("POST", "/rules", "bounces.add_rule", 201,
         body=lambda: {"id": f"custom-{next(_serial)}", "pattern": "mailbox is on holiday",
                       "failure_type": "ignored", "reason": 25}),
    Case("GET", "/archive/status", "archive.status"),
    Case("GET", "/audit", "accounts.audit"),
    Case("GET", "/health", "operations.health"),
]


def test_every_route_of_the_schema_has_a_case(shared_api: Api) -> None:
    schema = shared_api.client.get("/api/v1/openapi.json").json()
    routes = {(method.upper(), path) for path, item in schema["paths"].items()
              for method in item}
    assert routes == {(c.method, c.route) for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.route}")
def test_each_role_gets_what_its_permissions_allow(shared_api: Api, case: Case) -> None:
    api = shared_api
    permission = REQUIRED[case.key]
    assert permission is not None

    anonymous = case.send(api, None)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["content-type"] == PROBLEM
    assert anonymous.headers["www-authenticate"].startswith("Bearer")

    for role in ROLE_NAMES:
        response = case.send(api, role)
        if permission in ROLES[role]:
            assert response.status_code == case.status, (role, response.text)
        else:
            assert response.status_code == 403, (role, response.text)
            problem = response.json()
            assert response.headers["content-type"] == PROBLEM
            assert problem["permission"] == permission.value
            assert permission.value in problem["detail"]


def test_a_wrong_token_is_refused_as_unauthenticated(api: Api) -> None:
    for header in ("Bearer nonsense", "Bearer " + api.tokens["admin"] + "x", "Basic abc",
                   "Bearer " + "x" * 5000):
        response = api.client.get("/api/v1/templates", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json()["status"] == 401


def test_an_operator_turning_email_bcc_off_is_refused_and_audited(api: Api) -> None:
    refused = api.request("operator", "PATCH", "/templates/with-bcc",
                          json={"email_bcc": False})
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == PROBLEM
    assert api.postroom.templates.get_template("with-bcc").properties.email_bcc is True

    audit = api.request("admin", "GET", "/audit", params={"outcome": "denied"}).json()
    rows = [row for row in audit["items"] if row["action"] == "templates.update_template"]
    assert rows and rows[0]["actor"] == "operator-user" and rows[0]["origin"] == "api"
    assert rows[0]["target"] == "with-bcc"

    quiet = api.request("sender", "POST", "/deliveries", json={
        "template": "with-bcc", "overrides": {"email_bcc": False}})
    assert quiet.status_code == 403, quiet.text
    assert quiet.json()["permission"] == "archive:manage"
    kept = api.request("operator", "POST", "/deliveries", json={"template": "with-bcc"})
    assert kept.status_code == 201 and kept.json()["email_bcc"] is True

    allowed = api.request("admin", "PATCH", "/templates/with-bcc", json={"email_bcc": False})
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["properties"]["email_bcc"] is False


def test_bad_input_gets_field_errors_as_problem_json(api: Api) -> None:
    response = api.request("admin", "POST", "/deliveries",
                           json={"template": 5, "surprise": 1, "filters": "x"})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    fields = {e["field"] for e in problem["errors"]}
    assert {"body.template", "body.surprise", "body.filters"} <= fields
    assert problem["status"] == 422 and problem["title"]
    assert problem["type"] == "urn:postroom:problem:validation"

    limit = api.request("admin", "GET", "/deliveries", params={"limit": 100_000})
    assert limit.status_code == 422
    assert [e["field"] for e in limit.json()["errors"]] == ["query.limit"]

    broken = api.request("admin", "POST", "/templates",
                         json={"name": "broken", "properties": {"html": "{{ x "}})
    assert broken.status_code == 422, broken.text
    assert broken.json()["title"] == "Template error"

    not_json = api.client.post("/api/v1/deliveries", content=b"{not json",
                               headers={**api.headers("admin"),
                                        "Content-Type": "application/json"})
    assert not_json.status_code == 422
    assert not_json.headers["content-type"] == PROBLEM

    missing = api.request("admin", "GET", "/deliveries/999999")
    assert missing.status_code == 404
    assert missing.json()["title"] == "Not found"
    assert missing.json()["type"] == "urn:postroom:problem:not_found"

    unknown = api.request("admin", "GET", "/nowhere")
    assert unknown.status_code == 404 and unknown.headers["content-type"] == PROBLEM
    assert (unknown.json()["type"], unknown.json()["title"]) == ("about:blank", "Not Found")
    line_break = api.request("admin", "GET", "/templates/%0A0")  # outside the mount's pattern
    assert line_break.status_code == 404 and line_break.headers["content-type"] == PROBLEM

    state = api.request("admin", "POST", f"/deliveries/{api.delivery('editing')}/pause")
    assert state.status_code == 409, state.text


def test_bodies_past_their_bound_get_413_unread(api: Api) -> None:
    big = {"template": "plain", "name": "x" * 100, "filters": ["a = b"] * 10,
           "overrides": {"html": "y" * 70_000}}
    response = api.request("admin", "POST", "/deliveries", json=big)
    assert response.status_code == 413
    assert response.json()["limit"] == 64 * 1024

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"template": "plain", "name": "'
        for _ in range(100):
            yield b"z" * 1024
        yield b'"}'

    streamed = api.client.post("/api/v1/deliveries", content=chunks(),
                               headers={**api.headers("admin"),
                                        "Content-Type": "application/json"})
    assert streamed.status_code == 413

    upload = api.request("admin", "POST", "/recipients/import", files={
        "file": ("big.csv", b"email\n" + b"someone@example.com\n" * 20_000, "text/csv")})
    assert upload.status_code == 413
    assert upload.json()["limit"] == 256 * 1024

    elsewhere = api.request("admin", "POST", "/templates", files={  # not an upload path
        "file": ("t.csv", b"x" * 100_000, "text/csv")})
    assert elsewhere.status_code == 413
    assert elsewhere.json()["limit"] == 64 * 1024


def test_recipients_are_listed_with_audience_filters(api: Api) -> None:
    csv = b"email,first_name,city\na@example.com,A,Lyon\nb@example.com,B,Paris\n" \
          b"c@example.com,C,Lyon\n"
    assert api.request("operator", "POST", "/recipients/import",
                       files={"file": ("c.csv", csv, "text/csv")}).status_code == 200
    found = api.request("viewer", "GET", "/recipients",
                        params=[("filter", "city=Lyon"), ("filter", "first_name!=A")])
    assert found.status_code == 200, found.text
    assert [r["email"] for r in found.json()["items"]] == ["c@example.com"]
    assert found.json()["total"] == 1
    bad = api.request("viewer", "GET", "/recipients", params={"filter": "city Lyon"})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert "FIELD=VALUE" in bad.json()["detail"]


def test_import_reports_each_bad_row(api: Api) -> None:
    csv = b"email,first_name\ngood@example.com,G\nnot-an-address,B\n,Empty\n"
    response = api.request("operator", "POST", "/recipients/import",
                           files={"file": ("rows.csv", csv, "text/csv")})
    assert response.status_code == 200, response.text
    report = response.json()
    cli_shape = api.postroom.recipients.import_recipients(
        _write(api.tmp / "again.csv", csv)).to_json()
    assert set(report) == set(cli_shape)
    assert report["rows"] == 3 and report["inserted"] == 1 and report["rejected"] == 2
    assert [e["line"] for e in report["errors"]] == [3, 4]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_lists_page_through_every_item_once(api: Api) -> None:
    for n in range(7):
        api.postroom.templates.duplicate_template("plain", f"page-{n}")
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = api.request("viewer", "GET", "/templates",
                           params={"limit": 3, "offset": offset}).json()
        assert len(page["items"]) <= 3
        seen += [t["name"] for t in page["items"]]
        offset = page["next_offset"]
    names = [t.name for t in api.postroom.templates.list_templates()]
    assert seen == names and len(names) >= 9


def test_send_from_the_api_runs_in_the_server_and_events_follow_it(api: Api) -> None:
    delivery_id = api.delivery("editing")
    started = api.request("sender", "POST", f"/deliveries/{delivery_id}/send")
    assert started.status_code == 202, started.text
    assert started.json()["mode"] == "in_process"

    events: list[tuple[str, dict[str, Any]]] = []
    with api.client.stream("GET", f"/api/v1/deliveries/{delivery_id}/events",
                           headers=api.headers("viewer")) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    assert events[-1][0] == "end"
    assert events[-1][1]["state"] == "finished"
    last = [data for kind, data in events if kind == "counts"][-1]
    assert last["by_status"].get("sent") == 3
    assert len(api.relay.messages) == 3
    report = api.request("compliance", "GET", f"/deliveries/{delivery_id}").json()
    assert report["by_status"]["sent"] == 3


def test_proof_goes_to_the_relay_and_not_to_the_log(api: Api) -> None:
    delivery_id = api.delivery("editing")
    response = api.request("operator", "POST", f"/deliveries/{delivery_id}/proof",
                           json={"to": ["proof@example.com"]})
    assert response.status_code == 200, response.text
    assert [m for m in api.relay.messages if "proof@example.com" in m.rcpt_tos]
    logs = api.request("admin", "GET", f"/deliveries/{delivery_id}/logs").json()
    assert logs["items"] == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_with_postgresql_a_send_is_left_to_the_workers(database_url: str,
                                                       tmp_path: Path) -> None:
    with api_instance(tmp_path, database_url) as api:
        delivery_id = api.delivery("editing")
        started = api.request("sender", "POST", f"/deliveries/{delivery_id}/send")
        assert started.status_code == 202, started.text
        assert started.json()["mode"] == "workers"
        assert started.json()["delivery"]["state"] == "sending"
        events = api.request("viewer", "GET", f"/deliveries/{delivery_id}/events",
                             params={"max_seconds": 1})
        assert "event: end" in events.text and '"reason":"limit"' in events.text
        assert api.relay.messages == []  # nobody but a worker sends it


def test_a_bug_is_a_500_problem_without_its_internals(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    app = create_api(api.postroom)

    async def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    app.add_api_route("/boom", boom)

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://api") as client:
            return await client.get("/boom")

    response = asyncio.run(get())
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert set(body) == {"type", "status", "title", "detail", "reference"}
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert body["reference"] in caplog.text and "hunter2" in caplog.text  # the log has it


def test_event_streams_are_capped_per_server(api: Api) -> None:
    """Each stream polls the store: past `max_streams` open at once, a 503 problem with
    Retry-After; a stream that ended frees its place."""
    import threading

    from postroom.web.api.events import EventLimits
    from tests.integration.web_server import serving

    app = create_api(api.postroom, events_limits=EventLimits(poll_seconds=0.05, max_streams=1))
    live = api.delivery("paused")  # stays live: its stream lasts until max_seconds
    with serving(api.postroom, app) as client:
        path = f"/deliveries/{live}/events"
        opened = threading.Event()

        def hold() -> None:
            with client.stream("GET", path, params={"max_seconds": 3},
                               headers=api.headers("viewer")) as stream:
                for _ in stream.iter_lines():
                    opened.set()

        holder = threading.Thread(target=hold)
        holder.start()
        assert opened.wait(10)
        refused = client.get(path, headers=api.headers("viewer"))
        assert refused.status_code == 503
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.headers["retry-after"] == "5" and refused.json()["limit"] == 1
        holder.join(10)
        again = client.get(path, params={"max_seconds": 1}, headers=api.headers("viewer"))
        assert again.status_code == 200 and "event: end" in again.text
