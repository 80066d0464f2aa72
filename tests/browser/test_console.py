"""The console in real Chromium against a real uvicorn and real SMTP capture servers (issue 13,
acceptance 1 and 5): each flow leaves a screenshot in docs/console/<page>.png."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from postroom.testing.smtp_server import CaptureServer, Script
from tests.conftest import ARCHIVE, write_csv
from tests.integration.web_server import serving

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
PASSWORD = "correct horse battery staple"
PEOPLE = [("ada@example.org", "Ada", "Lisboa"), ("bjorn@example.org", "Björn", "Zürich"),
          ("chloe@example.org", "Chloé", "Kraków"), ("dmitri@example.org", "Dmitri", "Osaka")]


@dataclass
class Site:
    url: str
    postroom: Any
    relay: CaptureServer
    archive: CaptureServer


@pytest.fixture
def site(make_postroom: Callable[..., Any], capture: Callable[..., CaptureServer],
         sqlite_url: str, tmp_path: Path) -> Iterator[Site]:
    relay = capture(script=Script().on_rcpt("gone@example.org", "550 5.1.1 No such user"))
    archive = capture()
    postroom = make_postroom(sqlite_url, relay, archive=archive)
    for name, role in (("admin", "admin"), ("vera", "viewer")):
        postroom.accounts.create_user(name, role, PASSWORD)
    postroom.recipients.import_recipients(write_csv(tmp_path / "people.csv", [
        {"email": e, "first_name": f, "city": c} for e, f, c in PEOPLE]))
    with serving(postroom) as client:
        yield Site(str(client.base_url).rstrip("/"), postroom, relay, archive)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    opened = context.new_page()
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    opened.set_default_timeout(15_000)
    yield opened
    context.close()
    # The CSP blocks nothing the console itself needs: no violation in any page.
    assert not [e for e in errors if "Content Security Policy" in e], errors


def in_thread(work: Callable[[], object]) -> None:
    """Run `work` in a thread of its own: Playwright's sync API holds this thread's loop."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # re-raised in the test's thread
            failures.append(exc)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if failures:
        raise failures[0]


def log_in(page: Any, site: Site, name: str = "admin") -> None:
    page.goto(f"{site.url}/console/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/console/")


def shot(page: Any, name: str, *, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def test_log_in_wrong_password_then_right_then_out(site: Site, page: Any) -> None:
    page.goto(f"{site.url}/console/deliveries")
    page.wait_for_url(f"{site.url}/console/login")            # no session: to the log-in
    page.fill("input[name=name]", "admin")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert "wrong name or password" in page.locator("[role=alert]").inner_text()
    shot(page, "login")
    log_in(page, site)
    assert page.locator("h1").inner_text() == "Dashboard"
    cookie = next(c for c in page.context.cookies() if c["name"] == "postroom_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.click("text=Log out")
    page.wait_for_url(f"{site.url}/console/login")
    page.goto(f"{site.url}/console/")
    page.wait_for_url(f"{site.url}/console/login")            # the session is gone


def test_import_a_csv_with_bad_rows_and_see_them_reported(site: Site, page: Any,
                                                          tmp_path: Path) -> None:
    csv = tmp_path / "upload.csv"
    csv.write_text("email,first_name,city\n"
                   "eun-ji@example.org,Eun-ji,Nairobi\n"
                   "not-an-address,Bad,Nowhere\n"
                   "farah@example.org,Farah,Montréal\n"
                   ",Empty,Nowhere\n", encoding="utf-8")
    log_in(page, site)
    page.click("nav >> text=Recipients")
    page.set_input_files("input[type=file]", str(csv))
    page.click("#import button[type=submit]")
    report = page.locator("#import-report")
    assert re.search(r"4 rows: 2 new, 0 updated,\s+2 rejected", report.inner_text())
    lines = page.locator("#import-report tr.row-error td:first-child").all_inner_texts()
    assert lines == ["3", "5"]                                  # the CSV's line numbers
    shot(page, "recipients")
    page.fill("input[name=q]", "FARAH")
    page.click("#search")
    page.wait_for_url(re.compile(r".*/console/recipients\?q=FARAH&filter=$"))
    assert page.locator("table a").all_inner_texts() == ["farah@example.org"]
    page.click("text=farah@example.org")
    assert page.locator("h1").inner_text() == "farah@example.org"
    assert page.locator("#address-status").inner_text() == "valid"
    shot(page, "recipient")


def test_create_a_template_and_preview_it_as_two_recipients(site: Site, page: Any) -> None:
    log_in(page, site)
    page.click("nav >> text=Templates")
    page.fill("#create-template input[name=name]", "welcome")
    page.click("#create-template button[type=submit]")
    page.wait_for_url(re.compile(r".*/console/templates/welcome$"))
    page.fill("input[name=subject]", "Hello {{ recipient.first_name }}")
    page.fill("input[name=from_address]", "news@shop.example")
    page.fill("textarea[name=html]", "<h1>Hi {{ recipient.first_name }} from "
              "{{ recipient.city }}</h1><script>parent.document.title='owned'</script>")
    page.click("#save")
    assert page.locator("[role=status]").inner_text() == "Saved."
    for email, first, city in PEOPLE[:2]:
        page.select_option("#preview-recipient", email)
        page.click("#show-preview")
        page.wait_for_selector(f"#preview-subject:text-is('Hello {first}')")
        frame = page.frame_locator("iframe.preview")
        assert frame.locator("h1").inner_text() == f"Hi {first} from {city}"
    # The template's script never ran: the frame is sandboxed, without script.
    assert page.title() != "owned"
    assert page.locator("iframe.preview").get_attribute("sandbox") == ""
    shot(page, "templates")


def test_delivery_with_email_bcc_prepare_proof_send_live(site: Site, page: Any) -> None:
    site.postroom.templates.create_template("news", {
        "subject": "News for {{ recipient.first_name }}", "from_address": "news@shop.example",
        "html": "<p>Hello {{ recipient.first_name }}</p>"})
    log_in(page, site)
    page.click("nav >> text=Deliveries")
    page.select_option("select[name=template]", "news")
    page.fill("input[name=name]", "December news")
    page.select_option("select[name=email_bcc]", "on")
    page.click("#create-delivery button[type=submit]")
    page.wait_for_url(re.compile(r".*/console/deliveries/\d+$"))
    assert page.locator("#email-bcc").inner_text() == "on"
    page.click("#prepare")
    page.wait_for_selector("#analysis-result")
    assert page.locator("#targets").inner_text() == str(len(PEOPLE))
    assert page.locator("#to-send").inner_text() == str(len(PEOPLE))
    page.fill("input[name=to]", "not an address")
    page.click("#send-proof")                        # refused: said in the page, no reload
    assert "Refused" in page.locator("#flash [role=alert]").inner_text()
    assert page.locator("#analysis-result").count() == 1
    page.fill("input[name=to]", "proof@shop.example")
    page.click("#send-proof")
    page.wait_for_selector("#proof-report")
    assert "proof@shop.example: sent" in page.locator("#proof-report").inner_text()
    [proof] = site.relay.received_for("proof@shop.example")
    assert b"Proof #1" in proof.data
    page.evaluate("window.notReloaded = true")
    page.click("#send")
    page.wait_for_selector("#state:text-is('finished')", timeout=30_000)
    assert page.evaluate("window.notReloaded") is True           # followed without a reload
    assert page.locator("#count-sent").inner_text() == str(len(PEOPLE))
    assert page.locator("#done").inner_text() == page.locator("#total").inner_text()
    assert len(site.relay.messages) == len(PEOPLE) + 1          # the proof, then each one
    deadline = time.monotonic() + 10
    while len(site.archive.messages) < len(PEOPLE) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(m.rcpt_tos[0] for m in site.archive.messages) == [ARCHIVE] * len(PEOPLE)
    page.reload()
    shot(page, "delivery")
    page.click("text=logs")
    page.select_option("select[name=status]", "failed")
    page.click("button:text-is('Filter')")
    page.wait_for_url(re.compile(r".*/logs\?status=failed$"))
    assert page.locator("table td.muted").inner_text() == "No log."
    page.select_option("select[name=status]", "sent")
    page.click("button:text-is('Filter')")
    page.wait_for_url(re.compile(r".*/logs\?status=sent$"))
    assert page.locator("table tr").count() == len(PEOPLE) + 1
    shot(page, "logs")
    page.click("nav >> text=Dashboard")
    shot(page, "dashboard")
    page.click("nav >> text=Archive")
    shot(page, "archive")


def test_release_a_quarantined_address(site: Site, page: Any, tmp_path: Path) -> None:
    pr = site.postroom
    pr.recipients.import_recipients(write_csv(tmp_path / "gone.csv", [
        {"email": "gone@example.org", "first_name": "Gone"}]))
    pr.templates.create_template("t", {"subject": "Hi", "html": "<p>Hi</p>",
                                       "from_address": "news@shop.example"})
    delivery, _ = pr.deliveries.create_delivery("t", filters=["email=gone@example.org"])
    in_thread(lambda: asyncio.run(pr.sending.send(delivery.id)))
    assert pr.quarantine.get_address("gone@example.org").status == "quarantine"
    log_in(page, site)
    page.click("nav >> text=Quarantine")
    row = page.locator("tr", has_text="gone@example.org")
    assert "550 5.1.1" in row.inner_text() or "quarantine" in row.inner_text()
    shot(page, "quarantine")
    row.locator("button", has_text="Release").click()
    assert "gone@example.org: released" in page.locator("#released").inner_text()
    assert pr.quarantine.get_address("gone@example.org").status == "valid"
    page.click("nav >> text=Bounces")
    page.fill("textarea[name=text]", "550 5.1.1 <kim@example.org>: Recipient address "
              "rejected: User unknown in virtual mailbox table")
    page.click("#test-rule")
    assert "hard" in page.locator("#tested").inner_text()
    shot(page, "bounces", full_page=False)         # the shipped rules run long
    page.click("nav >> text=Audit")
    row = page.locator("tr", has_text="quarantine.release_addresses")
    assert "admin" in row.inner_text() and "console" in row.inner_text()
    shot(page, "audit")


def test_a_viewer_sees_no_send_button(site: Site, page: Any) -> None:
    pr = site.postroom
    pr.templates.create_template("t", {"subject": "Hi", "html": "<p>Hi</p>",
                                       "from_address": "news@shop.example"})
    delivery, _ = pr.deliveries.create_delivery("t")
    log_in(page, site, "vera")
    page.goto(f"{site.url}/console/deliveries/{delivery.id}")
    assert page.locator("h1").inner_text().startswith(f"Delivery #{delivery.id}")
    assert page.locator("#send").count() == 0
    assert page.locator("#prepare").count() == 0
    assert page.locator("nav >> text=Archive").count() == 0
    # Forcing the request anyway is refused by the service layer, and changes nothing.
    status = page.evaluate("""async (id) => {
        const csrf = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token'];
        const r = await fetch(`/console/deliveries/${id}/send`,
                              {method: 'POST', headers: {'X-CSRF-Token': csrf}});
        return r.status; }""", delivery.id)
    assert status == 403
    assert str(pr.deliveries.get_delivery(delivery.id).state) == "editing"


