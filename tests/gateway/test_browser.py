"""The map and the customer page in a real browser (Debian's chromium, headless, driven by
Playwright): technicians appear on the streets, windows update as the day goes on, and
nothing is fetched from anywhere but the gateway. Screenshots go to ``out/screenshots/``
(or ``$FIELDSTREAM_SCREENSHOTS``)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gateway.feed import Clock, feed
from simulator import encoded_lines
from streams.bootstrap import open_state_store
from streams.config import Config
from tests.conftest import _missing
from tests.gateway.livekit import Running, open_test_log, start_gateway
from tests.support import process, simulated_day

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
HOW = (
    "the browser tests need Debian's chromium (`apt-get install chromium`) and Playwright "
    "for Python (`pip install -e '.[test]'`)"
)
SCREENSHOTS = Path(os.environ.get("FIELDSTREAM_SCREENSHOTS", "out/screenshots"))
MORNING = 1_795_424_400_000  # 2026-11-23T09:00Z: 10:00 in Andorra, everyone on shift


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        _missing(f"no {CHROMIUM}: {HOW}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing(f"Playwright is not installed: {HOW}")
        raise
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _day_until(data_dir: Path, until_ms: int, after_ms: int | None = None) -> None:
    """Ingest the simulated day's records delivered in (after, until], then process them."""
    sim = simulated_day("normal", technicians=8, seed=5, hours=9.0)

    async def body() -> None:
        log = await open_test_log(data_dir)
        lines = [
            (t, raw)
            for t, raw in encoded_lines(sim)
            if t <= until_ms and (after_ms is None or t > after_ms)
        ]
        report = await feed(log, lines, clock=Clock(None))
        assert report.rejected == 0
        store = open_state_store(data_dir, None)
        try:
            await process(log, store, Config(data_dir=data_dir))
        finally:
            store.close()
            await log.close()

    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, body()).result()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data_dir = tmp_path_factory.mktemp("browser")
    _day_until(data_dir, MORNING)
    running = start_gateway(data_dir)
    yield running
    running.stop()


def _wait(page: Any, expression: str, timeout_s: float = 20.0) -> None:
    """Poll ``expression`` in the page until it is truthy (polled from here: the pages'
    content policy forbids the eval Playwright's own wait_for_function relies on)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_s} s: {expression}"
        page.wait_for_timeout(100)


def _page(browser: Any, live: Running, path: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{live.http}{path}")
    return page, requested + errors


def test_the_map_shows_technicians_on_the_streets_and_windows_update(
    browser: Any, live: Running
) -> None:
    page, seen = _page(browser, live, f"/map?token={live.dispatcher()}")
    _wait(
        page,
        "window.fieldstream.drawn >= 3 && +document.getElementById('tech-count').textContent >= 3",
    )
    state = page.evaluate(
        "({drawn: window.fieldstream.drawn, techs: document.getElementById('tech-count')"
        ".textContent, orders: Object.keys(window.fieldstream.orders).length,"
        " conn: document.getElementById('conn').textContent,"
        " etas: Object.fromEntries(Object.values(window.fieldstream.orders)"
        ".filter(o => o.eta).map(o => [o.id, o.eta_at]))})"
    )
    assert int(state["techs"]) >= 3 and state["orders"] > 0 and state["conn"] == "live"
    assert state["etas"], "some work orders have an ETA window"
    assert "ETA" in page.inner_text("#technicians")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "map.png"))

    # Twenty more minutes of the day: positions move and windows are re-estimated.
    before = page.evaluate("JSON.stringify(window.fieldstream.positions)")
    _day_until(live.data_dir, MORNING + 20 * 60_000, after_ms=MORNING)
    changed = (
        "Object.values(window.fieldstream.orders).filter(o => o.eta_at && "
        f"o.eta_at !== ({json.dumps(state['etas'])})[o.id]).length"
    )
    _wait(page, changed)
    # The side list is redrawn in the frame that redraws the map: by the next frame every
    # technician's row shows the status the map colours them with.
    mismatched = page.evaluate(
        "new Promise((done) => requestAnimationFrame(() => {"
        " const rows = [...document.querySelectorAll('#technicians li.tech')];"
        " const techs = window.fieldstream.technicians;"
        " const wrong = rows.filter((li) =>"
        " !li.classList.contains((techs[li.dataset.id] || {}).status));"
        " done({rows: rows.length, techs: Object.keys(techs).length,"
        " wrong: wrong.map((li) => li.dataset.id)});"
        "}))"
    )
    assert mismatched["rows"] == mismatched["techs"] and not mismatched["wrong"], mismatched
    assert page.evaluate("JSON.stringify(window.fieldstream.positions)") != before
    assert page.evaluate("window.fieldstream.feed.stats.deltas") > 0
    page.screenshot(path=str(SCREENSHOTS / "map-later.png"))
    assert all(url.startswith(live.http) for url in seen if url.startswith("http")), seen
    assert not [s for s in seen if not s.startswith("http")], seen  # no page errors
    page.close()


def test_the_customer_page_shows_the_van_on_its_way(browser: Any, live: Running) -> None:
    view = live.gateway.view
    en_route = sorted(w for w, o in view.orders.items() if o.status == "en_route")
    assert en_route, "the simulated morning has a technician on the way"
    wid = en_route[0]
    page, seen = _page(browser, live, f"/track/{wid}?token={live.customer(wid)}")
    _wait(page, "window.fieldstream.doc !== null")
    headline = page.inner_text("#headline")
    assert headline.startswith("On the way, arriving "), headline
    name = page.inner_text("#tech")
    assert name and " " not in name  # a first name only
    assert page.evaluate("window.fieldstream.doc.position !== null")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "track.png"), full_page=True)
    assert all(url.startswith(live.http) for url in seen if url.startswith("http")), seen
    page.close()


def test_a_page_without_a_valid_token_says_so(browser: Any, live: Running) -> None:
    page, _ = _page(browser, live, "/track/WO-1?token=forged")
    _wait(page, "document.getElementById('conn').className.includes('refused')")
    assert "not valid" in page.inner_text("#conn")
    page.close()
