"""The service's page in a real headless browser: Debian's chromium driven by Playwright against
``haq serve`` on loopback, watching a search update while it runs (screenshot saved).

Install the browser with ``apt-get install chromium`` (Playwright's own browser download is never
used); without /usr/bin/chromium or the playwright package the test is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("the page test needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the page test needs the playwright package (pip install playwright)"
)
pytest.importorskip("fastapi", reason="the service needs the 'service' extra (fastapi, uvicorn, sqlalchemy)")

from test_service_support import TOKEN, ServiceProcess, tiny_search, wait_for  # noqa: E402

from haq.workload import Workload  # noqa: E402

EPISODES = 40
"""Long enough (about 0.25 s an episode) that the page's 2-second polls see the search part-done."""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_page_shows_jobs_scatter_and_bits_updating_while_a_search_runs(tmp_path: Path, digits_workload: Workload) -> None:
    """The page is open before the search is submitted: a browser that starts slower than the
    search runs (seconds, under load) would otherwise first draw it finished, and could not see it
    update (one CI failure)."""
    service = ServiceProcess(tmp_path / "store").start()
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, env={**os.environ, "HOME": str(tmp_path)}
            )
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{service.url}/#token={TOKEN}")
                assert TOKEN not in page.url, "the token must leave the address bar"
                page.wait_for_selector("#status:has-text('updated')", timeout=60_000)
                status, search = service.call("POST", "/jobs", tiny_search(EPISODES))
                assert status == 201
                # the page selects the newest job when none is selected: the search, before the baseline exists
                page.wait_for_selector(f"#jobs tr.selected[data-job-id='{search['id']}']", timeout=60_000)
                baseline_doc = {
                    "version": 1,
                    "kind": "baseline",
                    "baseline": {"method": "uniform", "evaluations": 3},
                    "env": {"evaluation": {"kind": "cheap"}},
                }
                status, baseline = service.call("POST", "/jobs", baseline_doc)
                assert status == 201
                page.wait_for_selector("#scatter circle.episode", timeout=120_000)
                first = page.locator("#scatter circle.episode").count()
                assert first < EPISODES, "the page drew the search only once it had finished"
                wait_for(
                    "more episodes drawn while the search runs",
                    lambda: page.locator("#scatter circle.episode").count() > first,
                    timeout=120,
                    every=0.5,
                )
                wait_for(
                    "the search to finish on the page",
                    lambda: "finished" in page.inner_text(f"#jobs tr[data-job-id='{search['id']}']"),
                    timeout=180,
                    every=0.5,
                )
                wait_for(
                    "the baseline to finish", lambda: service.call("GET", f"/jobs/{baseline['id']}")[1]["state"] == "finished"
                )
                wait_for(
                    f"all {EPISODES} episodes drawn",
                    lambda: page.locator("#scatter circle.episode").count() == EPISODES,
                    timeout=30,
                    every=0.5,
                )
                wait_for(
                    "the baseline's points overlaid", lambda: page.locator("#scatter rect.baseline").count() >= 1, timeout=30
                )
                assert page.locator("#scatter polyline.pareto").count() == 1
                assert page.locator("#scatter line.budget").count() == 1
                layers = len(service.call("GET", f"/jobs/{search['id']}")[1]["layers"])
                assert page.locator("#bits rect.wbar").count() == layers and page.locator("#bits rect.abar").count() == layers
                assert f"{EPISODES} episodes of {EPISODES}" in page.inner_text("#job-summary")
                shot = tmp_path / "page.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                assert errors == []
            finally:
                browser.close()
    finally:
        service.stop()
