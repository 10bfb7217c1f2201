"""The dashboard's pages in headless Chromium (Debian's ``chromium`` and
``chromium-driver``), driven by Selenium, on the run of tests/support/dashboard.py.

Skipped, saying why, where Chromium or its driver is not installed (``.ci/run``
installs them where it can).  Screenshots go to ``$HPO_SCREENSHOT_DIR`` when set,
else to the test's temporary directory; docs/dashboard-run.png (the README's) is the
``run.png`` of ``HPO_SCREENSHOT_DIR=DIR python -m pytest tests/coordinator/dashboard/test_browser.py``.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest
import uvicorn
from pymongo.database import Database

from coordinator.dashboard.app import create_app
from coordinator.dashboard.cli import SHUTDOWN_S
from coordinator.dashboard.data import TOP_CURVES, DashboardData
from coordinator.dashboard.live import ChangeFeed
from jobstore import schema as s
from jobstore.view import ReadOnlyView
from jobstore.connection import server_time
from jobstore.embedded import free_port
from tests.support.dashboard import DEAD_WORKER, EPOCHS, LIVE_WORKER, RUN, SECRET, Seeded, WatchFails, finish_next, seed
from tests.support.processes import wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="browser tests need Chromium and its driver: apt-get install chromium chromium-driver"),
]
WAIT_S = 60.0
"""How long a test waits for the page (a timeout, not a speed claim)."""
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,2600"]
STREAM_CLOSE_S = 30.0
"""How long a test waits for the server to see a left page's event stream closed (a
timeout, not a speed claim: it takes about a second; Chromium let a page kept in its
back/forward cache hold the stream for a minute)."""


@pytest.fixture(scope="module")
def seeded(mongo_server_url: str) -> Iterator[tuple[Database, Seeded]]:
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_server_url)
    db = client[f"t_browser_{uuid.uuid4().hex[:6]}"]
    # fewer than TOP_CURVES trials that ran to the end: some pruned trials are among the curves
    yield db, seed(db, done=TOP_CURVES - 1, pruned=6, errors=2, new=6)
    client.drop_database(db.name)
    client.close()


class EventStreams:
    """The dashboard's ASGI app, counting the event streams it is serving (what the
    browser's pages hold open)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.open = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/api/events":
            return await self.app(scope, receive, send)
        self.open += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open -= 1


@pytest.fixture(scope="module")
def streams(seeded: tuple[Database, Seeded]) -> EventStreams:
    db, _ = seeded
    return EventStreams(create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(db)))


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` served on a free local port (its base URL) until the block ends."""
    port = free_port()
    # as `hpo-coord dashboard` serves it: the browser's page still holds its event stream
    # when this server stops, which without the limit would wait for the page to close
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1",
                                           port=port, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_S))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, WAIT_S, "the dashboard to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)
    assert not thread.is_alive(), "the dashboard did not stop within 30 s"


@pytest.fixture(scope="module")
def base_url(streams: EventStreams) -> Iterator[str]:
    with serving(streams) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("HPO_SCREENSHOT_DIR")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def open_page(browser: Any, url: str) -> None:
    browser.get(url)
    wait_for(lambda: browser.execute_script("return document.body.dataset.loaded === 'true' "
                                            "|| !!document.getElementById('page-error')"), WAIT_S, f"{url} to load")
    assert not browser.find_elements("id", "page-error"), browser.find_element("id", "page-error").text


def chart_data(browser: Any, chart: str) -> list[dict[str, Any]]:
    """The traces Plotly drew in ``#chart``, as the browser holds them."""
    return browser.execute_script(f"return document.getElementById('{chart}').data || null") or []


def trace(traces: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The trace whose legend name starts with ``name``."""
    [found] = [t for t in traces if t.get("name", "").startswith(name)]
    return found


def table_tids(browser: Any) -> list[str]:
    """The tids of the trial table's rows, read in one script (the table is redrawn
    while the page updates, so element handles may go stale between calls)."""
    return browser.execute_script(
        "return [...document.querySelectorAll('#trials tbody tr')].map((r) => r.dataset.tid)")


def table_state(browser: Any, tid: int) -> str | None:
    """The state cell of trial ``tid`` in the table, or None if it is not shown."""
    return browser.execute_script(
        f"const r = document.querySelector(\"#trials tr[data-tid='{tid}']\"); return r ? r.cells[1].textContent : null")


def test_runs_page(browser: Any, base_url: str, shots: Path) -> None:
    browser.get(base_url + "/")
    wait_for(lambda: browser.find_elements("css selector", f"#runs tr[data-run='{RUN}'] a"), WAIT_S, "the runs table")
    row = browser.find_element("css selector", f"#runs tr[data-run='{RUN}']")
    assert row.find_element("tag name", "a").get_attribute("href").endswith(f"/runs/{RUN}")
    assert "nested" in row.text and "tpe" in row.text
    headers = [th.text for th in browser.find_elements("css selector", "#runs thead th")]
    pruner = row.find_elements("tag name", "td")[headers.index("pruner")]
    assert pruner.text == "asha on val_loss (minimize): min_resource 1, max_resource 3, reduction_factor 2"
    browser.save_screenshot(str(shots / "runs.png"))


def test_run_page_draws_every_chart(browser: Any, base_url: str, seeded: tuple[Database, Seeded], shots: Path) -> None:
    _, sd = seeded
    open_page(browser, f"{base_url}/runs/{RUN}")
    wait_for(lambda: chart_data(browser, "chart-importance"), WAIT_S, "the importance chart")
    loss = chart_data(browser, "chart-loss")
    assert trace(loss, "trial loss")["x"] == sorted(set(sd.done) - set(sd.pruned))
    assert len(trace(loss, "best so far")["y"]) == len(sd.done)
    assert trace(loss, "error")["x"] == sd.errors
    pruned = trace(loss, f"pruned ({len(sd.pruned)})")
    assert pruned["x"] == sorted(sd.pruned) and pruned["marker"]["symbol"] == "x"
    assert pruned["customdata"] == [sd.pruned[t] for t in sorted(sd.pruned)]
    assert "pruned at step %{customdata}" in pruned["hovertemplate"]
    assert len(browser.find_elements("css selector", "#chart-loss .legendtext")) == 4, "a legend entry per trace"
    assert browser.find_elements("css selector", "#chart-loss .main-svg"), "the loss chart was rendered"
    assert browser.find_elements("css selector", "#chart-parallel .parcoords"), "parallel coordinates rendered"
    parallel = chart_data(browser, "chart-parallel")[0]
    assert [d["label"] for d in parallel["dimensions"]] == ["a", "freq", "model", "phase (log10)", "loss"]
    assert len(parallel["dimensions"][-1]["values"]) == len(sd.done)
    matrix = chart_data(browser, "chart-matrix")[0]
    assert matrix["type"] == "splom" and len(matrix["dimensions"]) == 4
    curves = chart_data(browser, "chart-curves")
    assert len(curves) == TOP_CURVES
    shown = [c for c in curves if int(c["name"].split()[1]) in sd.pruned]
    assert shown
    for curve in curves:
        tid = int(curve["name"].split()[1])
        if tid in sd.pruned:
            assert f"pruned at step {sd.pruned[tid]}" in curve["name"] and curve["line"]["dash"] == "dash"
            assert curve["marker"]["symbol"][-1] == "x" and len(curve["x"]) == sd.pruned[tid]
        else:
            assert "pruned" not in curve["name"] and curve["line"]["dash"] == "solid" and len(curve["x"]) == EPOCHS
    legend = [t.get_attribute("textContent") for t in browser.find_elements("css selector", "#chart-curves .legendtext")]
    assert sum("pruned at step" in text for text in legend) == len(shown)
    assert browser.find_element("id", "pruner").text.startswith("pruner\nasha on val_loss")
    assert len(browser.find_elements("css selector", "#chart-importance .barlayer .point")) == 4
    total = len(sd.done) + len(sd.errors) + 2 + len(sd.new)
    assert len(table_tids(browser)) == total
    assert browser.find_element("id", "page-info").text == f"1-{total} of {total}"
    stale = browser.find_elements("css selector", "#workers tr.stale")
    assert [row.get_attribute("data-worker") for row in stale] == [DEAD_WORKER]
    assert len(browser.find_elements("css selector", "#errors details")) == len(sd.errors)
    assert SECRET not in browser.page_source and "alice:***@" in browser.find_element("id", "errors").get_attribute("textContent")
    assert "change stream" in browser.find_element("id", "feed").text
    browser.save_screenshot(str(shots / "run.png"))


def test_trial_table_sorts_and_filters(browser: Any, base_url: str, seeded: tuple[Database, Seeded]) -> None:
    from selenium.webdriver.support.select import Select

    _, sd = seeded
    open_page(browser, f"{base_url}/runs/{RUN}")
    browser.find_element("css selector", "#trials th[data-sort='loss']").click()
    best = min(sd.done, key=sd.done.__getitem__)
    wait_for(lambda: table_tids(browser)[:1] == [str(best)], WAIT_S, "the table sorted by loss")
    browser.find_element("css selector", "#trial-filter select[name='state']").send_keys("error")
    browser.find_element("css selector", "#trial-filter button").click()
    wait_for(lambda: table_tids(browser) == [str(t) for t in sd.errors], WAIT_S, "the table filtered to error trials")
    Select(browser.find_element("css selector", "#trial-filter select[name='state']")).select_by_visible_text("any")
    Select(browser.find_element("css selector", "#trial-filter select[name='pruned']")).select_by_visible_text("pruned")
    browser.find_element("css selector", "#trial-filter button").click()
    wait_for(lambda: sorted(map(int, table_tids(browser))) == sorted(sd.pruned), WAIT_S,
             "the table filtered to pruned trials")
    badges = browser.execute_script("return Object.fromEntries([...document.querySelectorAll('#trials tbody tr.pruned')]"
                                    ".map((r) => [r.dataset.tid, r.querySelector('.badge.pruned').textContent]))")
    assert badges == {str(tid): f"pruned at step {step}" for tid, step in sd.pruned.items()}


def test_trial_page(browser: Any, base_url: str, seeded: tuple[Database, Seeded], shots: Path) -> None:
    _, sd = seeded
    tid = min(sd.done, key=sd.done.__getitem__)
    open_page(browser, f"{base_url}/runs/{RUN}/trials/{tid}")
    metrics = chart_data(browser, "chart-metrics")
    assert {trace["name"] for trace in metrics} == {"val_loss", "val_accuracy"}
    assert all(trace["x"] == [1, 2, 3] for trace in metrics)
    events = [row.text.split(" ")[0] for row in browser.find_elements("css selector", "#timeline tr")]
    assert events[:2] == ["queued", "claimed"] and events[-1] == "finished"
    assert browser.find_element("id", "error-section").get_attribute("hidden") is not None
    assert not browser.find_elements("id", "trial-pruned")
    browser.save_screenshot(str(shots / "trial.png"))
    stopped, step = next(iter(sd.pruned.items()))
    open_page(browser, f"{base_url}/runs/{RUN}/trials/{stopped}")
    assert browser.find_element("id", "trial-pruned").text == f"pruned\nat step {step}"
    assert browser.find_elements("css selector", "#chart-metrics .annotation-text")[0].text == f"pruned at step {step}"
    open_page(browser, f"{base_url}/runs/{RUN}/trials/{sd.errors[0]}")
    error = browser.find_element("id", "error").text
    assert "ConnectionError" in error and "alice:***@" in error and SECRET not in browser.page_source


def test_a_finished_trial_and_a_stale_worker_appear_without_reload(
        browser: Any, base_url: str, seeded: tuple[Database, Seeded], shots: Path) -> None:
    db, _ = seeded
    open_page(browser, f"{base_url}/runs/{RUN}")
    browser.execute_script("window.__notReloaded = true")
    before = len(chart_data(browser, "chart-loss")[0]["x"])
    tid, loss = finish_next(db)
    wait_for(lambda: len(chart_data(browser, "chart-loss")[0]["x"]) == before + 1, WAIT_S,
             "the finished trial in the loss chart")
    assert tid in chart_data(browser, "chart-loss")[0]["x"]
    wait_for(lambda: table_state(browser, tid) == "done", WAIT_S, "the finished trial in the table")
    past = server_time(db) - timedelta(minutes=5)
    db[s.WORKERS].update_one({s.ID: LIVE_WORKER}, {"$set": {s.WORKER_LAST_SEEN: past}})
    wait_for(lambda: browser.find_elements("css selector", f"#workers tr.stale[data-worker='{LIVE_WORKER}']"),
             WAIT_S, "the worker flagged stale")
    assert browser.execute_script("return window.__notReloaded === true"), "the page was reloaded"
    browser.save_screenshot(str(shots / "run-live.png"))


def test_a_page_left_closes_its_event_stream(browser: Any, base_url: str, seeded: tuple[Database, Seeded],
                                              streams: EventStreams) -> None:
    """Browsers allow six connections per host: pages left open streams starved the next
    page's requests (the previous test took 50 s instead of 5 after the other tests)."""
    _, sd = seeded
    for url in [f"{base_url}/", f"{base_url}/runs/{RUN}", f"{base_url}/runs/{RUN}/trials/{sd.errors[0]}"]:
        open_page(browser, url)
    wait_for(lambda: streams.open == 1, STREAM_CLOSE_S, "only the shown page's event stream to stay open")


def test_a_page_restored_by_back_is_live_again(browser: Any, base_url: str, seeded: tuple[Database, Seeded],
                                               streams: EventStreams) -> None:
    db, _ = seeded
    open_page(browser, f"{base_url}/")
    browser.execute_script("window.__notReloaded = true")
    open_page(browser, f"{base_url}/runs/{RUN}")
    browser.back()
    wait_for(lambda: browser.execute_script("return location.pathname") == "/", WAIT_S, "the runs page again")
    wait_for(lambda: streams.open == 1, STREAM_CLOSE_S, "only the runs page's event stream to stay open")
    headers = [th.text for th in browser.find_elements("css selector", "#runs thead th")]

    def done() -> str:
        return browser.execute_script(f"const r = document.querySelector(\"#runs tr[data-run='{RUN}']\"); "
                                      f"return r ? r.cells[{headers.index('done')}].textContent : null")

    before = int(done())
    finish_next(db)
    wait_for(lambda: done() == str(before + 1), WAIT_S, "the finished trial counted on the restored runs page")
    assert browser.execute_script("return window.__notReloaded === true"), "the page was reloaded, not restored"


def test_text_from_the_database_is_not_markup_in_the_charts(browser: Any, base_url: str,
                                                            seeded: tuple[Database, Seeded]) -> None:
    """Plotly reads its labels as HTML-like markup (links, bold, ...): a hyperparameter
    label or a metric name in a job document drew a link to another site into the charts."""
    db, _ = seeded
    run, markup = "markup", '<a href="https://evil/">link</a><b>bold</b>'
    sd = seed(db, done=12, errors=0, new=1, run=run)
    for job in db[s.JOBS].find({s.EXP_KEY: run, s.TID: {"$in": list(sd.done)}}):
        db[s.JOBS].update_one({s.ID: job[s.ID]}, {"$set": {
            s.VALS: {**job[s.MISC]["vals"], markup: [job[s.TID] / 10]},
            s.METRICS: [{"step": step, markup: 1 / step, "lr": step / 3} for step in (1, 2)]}})
    charts = ["chart-parallel", "chart-matrix", "chart-importance", "chart-curves"]
    open_page(browser, f"{base_url}/runs/{run}")
    wait_for(lambda: all(chart_data(browser, chart) for chart in charts), WAIT_S, "the charts")
    open_page(browser, f"{base_url}/runs/{run}/trials/{min(sd.done)}")
    wait_for(lambda: chart_data(browser, "chart-metrics"), WAIT_S, "the metrics chart")
    # the text shows as written, and no link or bold text came of it
    legend = browser.execute_script(
        "return [...document.querySelectorAll('#chart-metrics .legendtext')].map((t) => t.textContent)")
    assert sorted(legend) == sorted([markup, "lr"])
    assert not browser.find_elements("css selector", "#chart-metrics a, #chart-metrics tspan[style*='bold']")
    browser.back()
    wait_for(lambda: all(chart_data(browser, chart) for chart in charts), WAIT_S, "the charts again")
    for chart in charts:
        assert markup in browser.execute_script(f"return document.getElementById('{chart}').textContent"), chart
        assert not browser.find_elements("css selector", f"#{chart} a, #{chart} tspan[style*='bold']"), chart


def test_an_interrupted_change_stream_is_not_shown_as_live(browser: Any, seeded: tuple[Database, Seeded]) -> None:
    db, _ = seeded
    away = WatchFails(db, pymongo.errors.AutoReconnect("injected: connection refused"))
    with serving(create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(away))) as url:  # type: ignore[arg-type]
        open_page(browser, f"{url}/runs/{RUN}")
        feed = browser.find_element("id", "feed")
        wait_for(lambda: "interrupted" in feed.text, WAIT_S, "the header to say the stream is interrupted")
        assert feed.text.startswith("not live: change stream interrupted (AutoReconnect: injected"), feed.text
        browser.get("about:blank")  # the page's event stream closes before the server stops
