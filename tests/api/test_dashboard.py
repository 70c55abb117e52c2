"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against a real server."""

from __future__ import annotations

import shutil

import pytest

from omnithread.api.keys import KeyStore
from omnithread.config import Settings
from omnithread.identity import resolve_identities
from omnithread.privacy.secret import load_secret
from omnithread.profile import build_profiles
from omnithread.workspace import Workspace
from tests.conftest import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")


@pytest.fixture(scope="module")
def served(small_world, tmp_path_factory):
    out, manifest = small_world
    data = tmp_path_factory.mktemp("dash")
    with Workspace(Settings(data_dir=data)) as ws:
        ws.ingestor().ingest_paths(manifest["sources"])
        resolve_identities(ws.engine, ws.pseudonymiser)
        build_profiles(ws.engine)
        facts = {
            "events": ws.log.count(),
            "persons": ws.engine.scalar("SELECT count(*) FROM persons"),
            "rejected": ws.engine.scalar("SELECT count(*) FROM rejected_events WHERE status = 'open'"),
            "account": ws.engine.scalar(
                "SELECT split_part(identifier, ':', 2) FROM identity_map "
                "WHERE identifier LIKE 'account:%' ORDER BY events DESC, 1 LIMIT 1"
            ),
            "store": manifest["checkout_free_stores"][0],
            "store_receipts": None,
        }
        facts["store_receipts"] = ws.engine.scalar(
            "SELECT count(*) FROM events WHERE store_id = ? AND event = 'Order Completed'", [facts["store"]]
        )
    store = KeyStore(data, load_secret(data))
    read = store.create("read", "dashboard test")[0]
    store.close()
    server = Server(data).start()
    yield server, read, facts
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def test_pages_load_with_real_numbers_and_a_person_search_works(served, browser):
    server, read, facts = served
    context = browser.new_context(http_credentials={"username": read, "password": ""})
    page = context.new_page()
    foreign = []
    page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith(server.url) else None)

    page.goto(f"{server.url}/dashboard")
    assert page.inner_text("#total-events") == f"{facts['events']:,}"
    assert page.inner_text("#total-persons") == f"{facts['persons']:,}"
    assert page.inner_text("#total-rejected") == f"{facts['rejected']:,}"
    assert page.locator("svg").count() >= 1 and "Rejected events by reason" in page.content()

    page.fill("#q", facts["account"])
    page.click("#search")
    page.wait_for_selector("#person-id")
    assert page.inner_text("#person-id").startswith("p_")
    assert "account" in page.inner_text("main") and "Timeline" in page.inner_text("main")

    page.goto(f"{server.url}/dashboard/store/{facts['store']}")
    assert page.inner_text("#receipts") == f"{facts['store_receipts']:,}"
    assert "Picks put back, by shelf" in page.inner_text("main")

    page.goto(f"{server.url}/dashboard/recommend?surface=trending")
    assert page.inner_text("#served") == "trending" and page.locator("table.recs tr").count() > 5
    assert page.inner_text("#availability").startswith("(stock:")

    page.goto(f"{server.url}/dashboard/person?q=nobody%40example.com")
    assert "No person found" in page.inner_text("#not-found")
    assert foreign == []  # nothing fetched from the network
    context.close()


def test_the_dashboard_needs_a_read_key(served, browser):
    server, _, _ = served
    context = browser.new_context()
    response = context.request.get(f"{server.url}/dashboard")
    assert response.status == 401 and "Basic" in response.headers.get("www-authenticate", "")
    context.close()


def test_the_analytics_page_and_api_before_and_after_lifetime_value_is_scored(served, browser):
    """The understand stage through the server: its views by the read API, its page in the browser; lifetime
    value scored by the command line, which hands the work to the running server as a job."""
    import subprocess
    import sys

    import httpx

    server, read, facts = served
    auth = (read, "")
    stores = httpx.get(f"{server.url}/v1/analytics/stores", auth=auth, timeout=60)
    assert stores.status_code == 200 and facts["store"] in {r["store_id"] for r in stores.json()}
    journeys = httpx.get(f"{server.url}/v1/analytics/journeys?days=7", auth=auth, timeout=60).json()
    assert journeys["days"] == 7 and journeys["with_resolution"]["webrooming"]["orders"] > 0
    refused = httpx.get(f"{server.url}/v1/analytics/nope", auth=auth, timeout=60)
    assert refused.status_code == 400 and "view" in refused.text
    assert httpx.get(f"{server.url}/v1/analytics/stores", timeout=60).status_code == 401

    context = browser.new_context(http_credentials={"username": read, "password": ""})
    page = context.new_page()
    foreign = []
    page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith(server.url) else None)
    page.goto(f"{server.url}/dashboard/analytics")
    if not httpx.get(f"{server.url}/v1/analytics/lifetime", auth=auth, timeout=60).status_code == 200:
        assert "Lifetime value is not scored yet" in page.inner_text("main")
    for section in ("summary", "stores", "journeys", "revenue", "rfm"):
        assert page.locator(f"section#{section}").count() == 1, section
    assert page.locator("svg").count() >= 3

    done = subprocess.run(
        [sys.executable, "-m", "omnithread.cli", "clv", "--data-dir", str(server.data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lifetime = httpx.get(f"{server.url}/v1/analytics/lifetime", auth=auth, timeout=60)
    assert lifetime.status_code == 200
    assert {m["channel_group"] for m in lifetime.json()["models"]} == {"joined", "online", "store"}
    page.goto(f"{server.url}/dashboard/analytics")
    assert "Highest lifetime value" in page.inner_text("section#lifetime")
    assert foreign == []
    context.close()

    # an audience made by the command line (a job of the running server), read through the API
    made = subprocess.run(
        [sys.executable, "-m", "omnithread.cli", "audience", "create", "valuable", "--rule", "clv > 0"]
        + ["--data-dir", str(server.data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    listed = httpx.get(f"{server.url}/v1/audiences", auth=auth, timeout=60).json()
    assert [a["name"] for a in listed] == ["valuable"] and listed[0]["members"] > 10
    one = httpx.get(f"{server.url}/v1/audiences/valuable?limit=5", auth=auth, timeout=60).json()
    assert one["members"] == listed[0]["members"] and len(one["page"]) == 5
    assert httpx.get(f"{server.url}/v1/audiences/nobody", auth=auth, timeout=60).status_code == 404
    page = browser.new_context(http_credentials={"username": read, "password": ""}).new_page()
    page.goto(f"{server.url}/dashboard/analytics")
    assert "valuable" in page.inner_text("section#audiences")
