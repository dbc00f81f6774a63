"""The dashboard in real headless Chromium (Debian's, driven by selenium through Debian's chromedriver),
against a gateway whose store holds replayed GSM8K traffic: every figure checked against the store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from gearshift.gateway.summary import summarise
from gearshift.outcomes.datasets import load
from gearshift.store.view import TraceView
from gearshift.ui.data import verdict_of
from gearshift.watch.loop import alerts_name
from tests.support.ui_helpers import ADMIN_KEY, APP_KEY, CHROMEDRIVER, Browser, browser, ui_gateway

pytestmark = pytest.mark.skipif(not Path(CHROMEDRIVER).exists(),
                                reason="chromium-driver is not installed (.ci/run installs it)")
PAGES = ("overview", "routers", "watch", "traces", "ab", "keys", "reports")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("ui")
    reports = tmp / "reports"
    reports.mkdir()
    (reports / "gsm8k.html").write_text("<html><body><h1>a lab report</h1></body></html>")
    prompts = [str(p) for p in load("routellm/gsm8k").prompts[:200]]
    with ui_gateway(tmp, prompts, reports) as running:
        yield running


@pytest.fixture(scope="module")
def web(gw: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with browser(gw.url, tmp_path_factory.mktemp("chromium")) as b:
        b.sign_in(ADMIN_KEY)
        b.wait_ready("overview")
        yield b


def test_every_page_loads_without_console_errors(web: Browser) -> None:
    web.console_errors()
    for page in PAGES:
        web.open(f"/ui/{page}")
        web.wait_ready(page)
        assert web.driver.find_element(By.TAG_NAME, "h1").text
        assert web.console_errors() == [], page
    web.open("/ui/reports")
    web.wait_ready("reports")
    link = web.driver.find_element(By.CSS_SELECTOR, "#reports a")
    assert link.text == "gsm8k.html" and link.get_attribute("href").endswith("/ui/reports/gsm8k.html")


def test_overview_figures_and_charts_are_the_stores(web: Browser, gw: Any) -> None:
    rows = list(gw.gateway.store.traces())
    views = [TraceView.of(r) for r in rows]
    expected = summarise(rows, gw.gateway.config)
    web.open("/ui/overview?hours=24")
    web.wait_ready("overview")

    def value(kpi: str) -> float:
        return float(web.driver.find_element(By.ID, kpi).get_attribute("data-value"))

    assert value("kpi-requests") == len(rows) == 200
    spent = sum(v.cost_usd for v in views)
    assert value("kpi-spend") == pytest.approx(spent)
    escalated = [v for v in views if v.escalated]
    gated = [v for v in views if v.gated and v.answered]
    assert value("kpi-escalation") == pytest.approx(len(escalated) / len(gated))
    # The charts' last cumulative points: what was spent, and what always-strongest would have cost.
    spend, counterfactual = web.driver.execute_script(
        "const d = gs.charts.spend.data; return [d[1][d[1].length - 1], d[2][d[2].length - 1]];")
    assert spend == pytest.approx(spent)
    assert counterfactual == pytest.approx(expected["counterfactual_usd_estimate"]) and counterfactual > spent
    requests = web.driver.execute_script("return gs.charts.requests.data[1].reduce((a, b) => a + b, 0);")
    assert requests == len(rows)
    # Quality retained against always-strongest: the cheap answers' agreement with the reference on their
    # shadow pairs, over the share of requests not already answered by the reference.
    reference = gw.gateway.config.strongest()
    answered = [v for v in views if v.answered]
    pairs = [p for v in answered for p in v.served_pairs(reference)]
    cheap = sum(v.final_model != reference for v in answered) / len(answered)
    assert pairs and f"{len(pairs)} pairs" in web.driver.find_element(By.ID, "kpi-quality").text
    assert value("kpi-quality") == pytest.approx(1 - (1 - sum(p.passed for p in pairs) / len(pairs)) * cheap)
    assert web.console_errors() == []


def test_the_traces_filter_and_a_trace(web: Browser, gw: Any) -> None:
    views = [TraceView.of(r) for r in gw.gateway.store.traces()]
    web.open("/ui/traces")
    web.wait_ready("traces")
    Select(web.driver.find_element(By.NAME, "escalated")).select_by_value("yes")
    web.driver.find_element(By.ID, "apply").click()
    WebDriverWait(web.driver, 10).until(lambda d: "escalated=yes" in d.current_url)
    web.wait_ready("traces")
    ids = [tr.get_attribute("data-id") for tr in web.driver.find_elements(By.CSS_SELECTOR, "#traces tbody tr")]
    assert sorted(ids) == sorted(v.id for v in views if v.escalated) and ids
    web.open("/ui/traces?client=batch&verdict=none")
    web.wait_ready("traces")
    ids = [tr.get_attribute("data-id") for tr in web.driver.find_elements(By.CSS_SELECTOR, "#traces tbody tr")]
    clients = {r["id"]: r["client"] for r in gw.gateway.store.traces()}
    wanted = [v.id for v in views if clients[v.id] == "batch" and verdict_of(v) == "none"]
    assert sorted(ids) == sorted(wanted) and ids
    # Open the newest escalated trace: its calls, verdicts and cost.
    one = max((v for v in views if v.escalated), key=lambda v: v.created or 0)
    web.open(f"/ui/traces?escalated=yes&trace={one.id}")
    web.wait_ready("traces")
    WebDriverWait(web.driver, 10).until(lambda d: d.find_elements(By.ID, "trace-calls"))
    roles = [td.text for td in web.driver.find_elements(By.CSS_SELECTOR, "#trace-calls tbody td:nth-child(3)")]
    assert roles == [c.role + (" (shadow)" if i >= one.shadow_start else "") for i, c in enumerate(one.calls)]
    assert float(web.driver.find_element(By.ID, "trace-cost").get_attribute("data-value")) == pytest.approx(one.cost_usd)
    assert "fail" in web.driver.find_element(By.ID, "trace-verdicts").text
    assert web.console_errors() == []


def test_promote_and_roll_back_from_the_routers_page(web: Browser, gw: Any) -> None:
    store = gw.gateway.store
    router = "gearshift/cascade"
    first = store.add_router_version(router, {"note": "first"}, {}, "lab")
    second = store.add_router_version(router, {"note": "second"}, {}, "lab")
    store.promote(router, first, "alice")
    web.open("/ui/routers")
    web.wait_ready("routers")
    box = web.driver.find_element(By.ID, "router-gearshift_cascade")
    box.find_element(By.CSS_SELECTOR, f"button.promote[data-version='{second}']").click()
    WebDriverWait(web.driver, 10).until(lambda d: d.find_elements(By.ID, "done"))
    active = store.active_version(router)
    assert active is not None and active["version"] == second and active["promoted_by"] == "ops (ui)"
    web.wait_ready("routers")
    web.driver.find_element(By.CSS_SELECTOR, "#router-gearshift_cascade button.rollback").click()
    WebDriverWait(web.driver, 10).until(lambda d: "rolled back" in d.find_element(By.ID, "main").text)
    active = store.active_version(router)
    assert active is not None and active["version"] == first and active["promoted_by"] == "ops (ui rollback)"
    assert web.console_errors() == []


def test_alert_episodes_in_the_store_are_on_the_watch_timeline_at_their_times(web: Browser, gw: Any) -> None:
    store = gw.gateway.store
    watched = alerts_name(gw.gateway.config.watch)
    now = time.time()
    episode = {"watch": watched, "router": None, "rule": "abs change", "bound": 0.1, "raised_by": "replica-a:1"}
    store.open_episode({**episode, "metric": "escalation_rate", "value": 0.6, "baseline": 0.2, "started": now - 50 * 3600})
    store.close_episode(watched, "escalation_rate", now - 30 * 3600, 0.2, "replica-a:1")  # before the range: not shown
    store.open_episode({**episode, "metric": "escalation_rate", "value": 0.5, "baseline": 0.2, "started": now - 5 * 3600})
    store.close_episode(watched, "escalation_rate", now - 3 * 3600, 0.25, "replica-b:2")
    store.open_episode({**episode, "metric": "latency_p95", "rule": "ratio", "value": 2.0, "baseline": 1.0,
                        "started": now - 3600})
    web.open("/ui/watch?hours=24")
    web.wait_ready("watch")
    bars = web.driver.find_elements(By.CSS_SELECTOR, "#alerts .episode")
    found = sorted((b.get_attribute("data-metric"), float(b.get_attribute("data-started")),
                    b.get_attribute("data-ended")) for b in bars)
    assert [(m, round(s), e and round(float(e))) for m, s, e in found] == [
        ("escalation_rate", round(now - 5 * 3600), round(now - 3 * 3600)), ("latency_p95", round(now - 3600), "")]
    # Placed on the range's scale: the closed one from 19/24 to 21/24 of it, the open one from 23/24 to its end.
    track = web.driver.find_element(By.CSS_SELECTOR, "#alerts .track")
    width = track.size["width"]
    for b in bars:
        left = (b.location["x"] - track.location["x"]) / width
        right = left + b.size["width"] / width
        expected = (19 / 24, 21 / 24) if b.get_attribute("data-ended") else (23 / 24, 1.0)
        assert left == pytest.approx(expected[0], abs=0.02) and right == pytest.approx(expected[1], abs=0.02)
        assert "open" in b.get_attribute("class") or b.get_attribute("data-ended")
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in web.driver.find_elements(By.CSS_SELECTOR, "#episodes tbody tr")]
    assert [(r[0], r[2], r[7], r[8]) for r in rows] == [("escalation_rate", rows[0][2], "replica-a:1", "replica-b:2"),
                                                         ("latency_p95", "open", "replica-a:1", "")]
    assert rows[0][2] != "open" and rows[0][3] == "0.5000" and rows[0][4] == "0.2000"
    assert web.console_errors() == []


def test_a_phone_width_screen_has_no_sideways_scroll(web: Browser) -> None:
    web.driver.set_window_size(390, 844)
    try:
        for page in ("overview", "traces", "routers", "watch"):
            web.open(f"/ui/{page}")
            web.wait_ready(page)
            assert web.driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    finally:
        web.driver.set_window_size(1280, 800)
    assert web.console_errors() == []


def test_a_client_key_that_is_not_admin_cannot_sign_in(web: Browser) -> None:
    web.driver.delete_all_cookies()
    web.sign_in(APP_KEY)
    WebDriverWait(web.driver, 10).until(lambda d: "error=wrong-key" in d.current_url)
    web.wait_ready("login")
    assert web.driver.find_element(By.ID, "wrong-key").is_displayed()
    web.open("/ui/overview")
    assert web.driver.current_url.endswith("/ui/login")
    assert web.console_errors() == []
    web.sign_in(ADMIN_KEY)  # as the other tests found it
    web.wait_ready("overview")
    # server.ui_secure_cookie: auto, over plain HTTP: not Secure (the browser would not send it back).
    cookie = web.driver.get_cookie("gearshift_ui")
    assert cookie is not None and cookie["secure"] is False and cookie["httpOnly"] is True
