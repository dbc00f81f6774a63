"""Alerts: de-duplication, the log line, the webhook over a real socket, and the in-server loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gearshift.store.sqlite import SQLiteStore
from gearshift.watch import Alerter, Baseline, Counters, Watch, WatchLoop, recent_traces, render_metrics
from tests.support.watch_helpers import batch, watch_config


class Hook:
    """A webhook receiver on 127.0.0.1 that records each JSON body."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        self.got = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        self.got.set()
        return web.Response(status=self.status, text="ok")


@asynccontextmanager
async def serving(hook: Hook) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hooks/secret-token-123", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hooks/secret-token-123"
    finally:
        await runner.cleanup()


def _reports() -> tuple[Any, Any, Any, Any]:
    config = watch_config()
    baseline = Baseline.from_traces(batch(200, escalated_share=0.2), config)
    watch = Watch(config)
    drifted = watch.check(batch(100, escalated_share=0.6), baseline)
    calm = watch.check(batch(100, escalated_share=0.2), baseline)
    unknown = watch.check(batch(5, escalated_share=0.2), baseline)  # too few to judge anything
    return drifted, calm, unknown, baseline


def test_dedup_alerts_once_per_episode() -> None:
    drifted, calm, unknown, _ = _reports()
    names = {m.name for m in drifted.drifted}
    assert "escalation_rate" in names
    a = Alerter()
    fired, resolved = a.update(drifted)
    assert {m.name for m in fired} == names and not resolved
    assert a.update(drifted) == ([], [])  # still drifted: quiet
    assert a.update(unknown) == ([], [])  # cannot judge: state kept
    fired, resolved = a.update(calm)
    assert not fired and {m.name for m in resolved} == names
    fired, _ = a.update(drifted)  # drifts again: alerts again
    assert {m.name for m in fired} == names


def test_webhook_posts_over_a_real_socket_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    drifted, calm, _, _ = _reports()

    async def run() -> Hook:
        hook = Hook()
        async with serving(hook) as url:
            a = Alerter(webhook_url=url, timeout=5)
            with caplog.at_level(logging.INFO, logger="gearshift.watch"):
                fired = await a.process(drifted)
                assert fired and a.sent == 1
                assert await a.process(drifted) == [] and a.sent == 1  # de-duplicated: no second POST
                await a.process(calm)
                assert a.sent == 2
            await a.close()
        return hook

    hook = asyncio.run(run())
    first, second = hook.bodies
    assert first["source"] == "gearshift.watch" and first["window"]["n"] == 100
    esc = next(e for e in first["alerts"] if e["name"] == "escalation_rate")
    assert esc["status"] == "firing" and esc["value"] == pytest.approx(0.6) and esc["baseline"] == pytest.approx(0.2)
    assert "DRIFT escalation_rate" in first["text"]
    assert {e["status"] for e in second["alerts"]} == {"resolved"}
    warnings = [r for r in caplog.records if r.name == "gearshift.watch" and r.levelno == logging.WARNING]
    assert any("watch drift: escalation_rate 0.6 vs baseline 0.2" in r.getMessage() for r in warnings)
    assert any("watch recovered" in r.getMessage() for r in caplog.records)


def test_webhook_failure_is_logged_without_the_url(caplog: pytest.LogCaptureFixture) -> None:
    drifted, _, _, _ = _reports()

    async def run() -> Alerter:
        async with serving(Hook(status=500)) as url:
            a = Alerter(webhook_url=url)
            with caplog.at_level(logging.INFO, logger="gearshift.watch"):
                await a.process(drifted)
            await a.close()
        # Nothing listens here any more: a connection error, not an exception.
        with caplog.at_level(logging.INFO, logger="gearshift.watch"):
            await a.post({"x": 1})
        await a.close()
        return a

    a = asyncio.run(run())
    assert a.failed == 2 and a.sent == 0
    text = caplog.text
    assert "HTTP 500" in text and "webhook failed" in text
    assert "secret-token-123" not in text


def _fill(store: SQLiteStore, now: float) -> None:
    # A calm first hour, then a recent window that escalates far more and has longer prompts.
    old = batch(200, escalated_share=0.2, tokens=50)
    for i, t in enumerate(old):
        t.created = now - 7200 + i
    new = batch(100, escalated_share=0.6, tokens=400)
    for i, t in enumerate(new):
        t.created = now - 100 + i
    store.write(old + new)


def test_recent_traces_reads_the_newest_window(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    now = time.time()
    _fill(store, now)
    rows = recent_traces(store, 150, now=now)  # the newest 150, by index
    assert len(rows) == 150 and rows[-1]["created"] == now - 1 and rows[0]["created"] == now - 7200 + 150
    assert len(recent_traces(store, 500, now=now)) == 300  # fewer in the store than asked: all of them
    assert len(recent_traces(store, 500, seconds=200, now=now)) == 100
    assert recent_traces(store, 10, router="other", now=now) == []
    store.close()


def test_loop_checks_store_alerts_and_feeds_metrics(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    _fill(store, time.time())

    async def run() -> tuple[Hook, WatchLoop, Counters]:
        hook = Hook()
        async with serving(hook) as url:
            config = watch_config(window_requests=100, min_requests=50, interval_seconds=0.05, webhook_url=url)
            counters = Counters()
            loop = WatchLoop(store, config, counters)  # no baseline file: the oldest 100 traces
            await loop.start()
            await asyncio.wait_for(hook.got.wait(), timeout=30)
            while counters.watch_checks < 3:  # later checks stay quiet while the drift persists
                await asyncio.sleep(0.02)
            await loop.stop()
        return hook, loop, counters

    hook, loop, counters = asyncio.run(run())
    store.close()
    assert loop.report is not None and loop.report.baseline_n == 100
    assert "oldest 100 traces" in loop.report.baseline_source
    drifted = {m.name for m in loop.report.drifted}
    assert {"escalation_rate", "psi_prompt_tokens"} <= drifted
    assert len(hook.bodies) == 1  # one episode, one POST
    assert counters.watch_alerts["escalation_rate"] == 1
    text = render_metrics(counters)
    assert 'gearshift_watch_drift{metric="escalation_rate"} 1' in text
    assert 'gearshift_watch_value{metric="escalation_rate"} 0.6' in text


def test_loop_without_enough_traces_waits_for_a_baseline(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    store.write(batch(5))
    loop = WatchLoop(store, watch_config(), Counters())
    assert asyncio.run(loop.check_once()) is None and loop.report is None
    store.write(batch(50))
    report = asyncio.run(loop.check_once())
    assert report is not None and report.baseline_n == 55 and not report.drifted
    store.close()


def test_webhook_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_TEST_WATCH_HOOK", "http://127.0.0.1:9/hook?token=abc")
    assert Alerter.from_config(watch_config(webhook_url_env="GS_TEST_WATCH_HOOK").watch).webhook_url == \
        "http://127.0.0.1:9/hook?token=abc"
    assert Alerter.from_config(watch_config(webhook_url_env="GS_TEST_WATCH_UNSET").watch).webhook_url is None
