"""The report: one self-contained HTML file, opened in headless Chromium (Debian's, driven by Playwright),
fetching nothing, with every section and its charts; written by the command line and by the demo."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from omnithread.flows import resolve_persons, write_report
from omnithread.workspace import Workspace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def written(small_world, tmp_path_factory):
    from omnithread.config import Settings

    _, manifest = small_world
    data = tmp_path_factory.mktemp("report") / "data"
    with Workspace(Settings(data_dir=data)) as ws:
        ws.ingestor().ingest_paths(manifest["sources"])
        resolve_persons(ws)
        path, figures = write_report(ws, data / "out" / "report.html", holdout_days=14)
        events = ws.log.count()
    return path, figures, events


def test_the_report_holds_every_figure_it_was_given(written):
    path, figures, events = written
    text = path.read_text()
    assert text.startswith("<!doctype html>") and "<script" not in text and "http" not in text.split("<svg")[0]
    assert figures["log"]["events"] == events
    assert figures["lifetime_validation"]["holdout_days"] == 14
    assert {m["channel_group"] for m in figures["lifetime_models"]} == {"joined", "online", "store"}
    for store in figures["stores"]:
        assert f">{store['store_id']}<" in text
    assert f"{figures['journeys']['with_resolution']['store_touched_by_online']['store_orders']:,}" in text


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_report_opens_in_a_browser_and_fetches_nothing(written):
    from playwright.sync_api import sync_playwright

    path, figures, events = written
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        assert requests == [path.as_uri()]  # the file itself, nothing else
        assert page.inner_text("#tile-events b") == f"{events:,}"
        for section in ("summary", "lifetime", "stores", "journeys", "revenue", "rfm"):
            assert page.locator(f"section#{section}").count() == 1, section
        assert page.locator("svg").count() >= 5  # validation, hours, journeys, revenue, segments
        assert "Highest lifetime value" in page.inner_text("section#lifetime")
        browser.close()


def test_the_command_line_writes_the_report_and_prints_its_path(written, tmp_path):
    path, _, _ = written
    data = path.parent.parent
    out = tmp_path / "again.html"
    done = subprocess.run(
        [sys.executable, "-m", "omnithread.cli", "report", "--data-dir", str(data), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["report"] == str(out) and out.read_text().startswith("<!doctype html>")
    views = subprocess.run(
        [sys.executable, "-m", "omnithread.cli", "analytics", "rfm", "--data-dir", str(data), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert views.returncode == 0 and {r["segment"] for r in json.loads(views.stdout)} >= {"champions"}
    bad = subprocess.run(
        [sys.executable, "-m", "omnithread.cli", "analytics", "nope", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "view: 'nope' is not valid" in bad.stderr
