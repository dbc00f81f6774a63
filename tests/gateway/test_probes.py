"""Probes: /health/live answers while the process is up; /health/ready only while it can serve and keep traces."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3

from gearshift.gateway.server import running
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config

LIMIT = 5


def _get(url: str) -> tuple[int, dict[str, object]]:
    r = urllib3.PoolManager().request("GET", url, retries=False)
    return r.status, json.loads(r.data)


def _until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def _chat(url: str) -> int:
    body = json.dumps({"model": "gearshift/auto", "messages": [{"role": "user", "content": "hi"}]})
    r = urllib3.PoolManager().request("POST", url + "/v1/chat/completions", body=body,
                                      headers={"Content-Type": "application/json"})
    return r.status


def test_readiness_flips_while_the_store_is_down_past_the_limit_and_back(
        upstream: FakeUpstream, tmp_path: Path, postgres, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    config = gateway_config(upstream.url, tmp_path,
                            store={"url": pg_url, "password_env": "GEARSHIFT_TEST_PGPASSWORD", "flush_interval": 0.05},
                            server={"open": True, "ready_max_pending_traces": LIMIT})
    with running(config) as gw:
        assert _get(gw.url + "/health/ready") == (200, {"status": "ready",
                                                        "checks": {"config": "loaded", "store": "ok"}})
        postgres.accept_connections(pg_url, False)  # the database goes away
        try:
            assert _chat(gw.url) == 200  # serving goes on while traces are held
            _until(lambda: gw.gateway.writer.outage_seconds() is not None)
            status, body = _get(gw.url + "/health/ready")
            assert status == 200 and "holding 1 traces" in body["checks"]["store"]  # type: ignore[index]
            for _ in range(LIMIT):
                assert _chat(gw.url) == 200
            status, body = _get(gw.url + "/health/ready")
            assert status == 503 and body["status"] == "not_ready"
            assert "past server.ready_max_pending_traces (5)" in body["checks"]["store"]  # type: ignore[index]
            # Liveness does not depend on the store: restarting this process would not help.
            assert _get(gw.url + "/health/live") == (200, {"status": "ok"})
        finally:
            postgres.accept_connections(pg_url, True)
        _until(lambda: _get(gw.url + "/health/ready")[0] == 200)  # the held traces are written
        assert gw.gateway.writer.pending() == 0 and gw.gateway.store.count() == LIMIT + 1


def test_probes_need_no_key_and_reveal_no_figures_beyond_their_checks(upstream: FakeUpstream, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_CLIENT_KEY", "sk-client-" + "q" * 20)
    monkeypatch.setenv("GS_METRICS_KEY", "sk-metrics-" + "m" * 20)
    config = gateway_config(upstream.url, tmp_path, client_keys=[{"name": "app", "key_env": "GS_CLIENT_KEY"}],
                            server={"metrics_key_env": "GS_METRICS_KEY"})
    with running(config) as gw:
        status, body = _get(gw.url + "/health/ready")
        assert status == 200 and set(body) == {"status", "checks"}
        assert _get(gw.url + "/health/live") == (200, {"status": "ok"})
        assert urllib3.PoolManager().request("GET", gw.url + "/metrics").status == 401  # the details stay closed
