"""/health and /metrics: open by default; with server.metrics_key_env, details need that key and
liveness stays open; a named variable that is not set stops the start; what a request adds to /metrics."""

from __future__ import annotations

import json
import threading
import time

import pytest
import urllib3

from gearshift.errors import ConfigError
from gearshift.gateway.server import running
from tests.gateway.test_errors import check_error
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config
from tests.watch.test_prometheus import parse, value

http = urllib3.PoolManager()


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_TEST_UPSTREAM_KEY", "sk-up")


def get(gw, path: str, key: str | None = None):  # type: ignore[no-untyped-def]
    return http.request("GET", gw.url + path, headers={"Authorization": f"Bearer {key}"} if key else {})


def test_metrics_key_guards_details_but_not_liveness(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_METRICS_KEY", "m-secret")
    with FakeUpstream.running(models=("fake-small", "fake-large")) as up, \
            running(gateway_config(up.url, tmp_path, server={"metrics_key_env": "GS_METRICS_KEY"})) as gw:
        for key in (None, "wrong"):
            r = get(gw, "/health", key)
            assert r.status == 200 and json.loads(r.data) == {"status": "ok"}
            check_error(get(gw, "/metrics", key), 401, "metrics key")
        assert json.loads(get(gw, "/livez").data) == {"status": "ok"}
        full = json.loads(get(gw, "/health", "m-secret").data)
        assert full["status"] == "ok" and "routers" in full and "shadow" in full
        r = get(gw, "/metrics", "m-secret")
        assert r.status == 200 and "gearshift_unauthenticated_requests_total 2" in r.data.decode()


def test_without_a_metrics_key_details_stay_open(tmp_path) -> None:
    with FakeUpstream.running(models=("fake-small", "fake-large")) as up, \
            running(gateway_config(up.url, tmp_path)) as gw:
        assert "routers" in json.loads(get(gw, "/health").data)
        assert get(gw, "/metrics").status == 200


def test_unset_metrics_key_variable_stops_the_start(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GS_METRICS_KEY_MISSING", raising=False)
    with pytest.raises(ConfigError, match="GS_METRICS_KEY_MISSING"):
        gateway_config("http://127.0.0.1:9", tmp_path, server={"metrics_key_env": "GS_METRICS_KEY_MISSING"})


def test_metrics_count_tokens_first_tokens_and_requests_in_flight(tmp_path) -> None:
    """A stream's time to first token, its tokens and upstream time; a slow request is in flight while it runs."""
    with FakeUpstream.running(models=("fake-small", "fake-large")) as up, \
            running(gateway_config(up.url, tmp_path)) as gw:
        body = {"model": "gearshift/auto", "messages": [{"role": "user", "content": "count to three"}]}
        r = http.request("POST", gw.url + "/v1/chat/completions", json={**body, "stream": True})
        assert r.status == 200 and b"[DONE]" in r.data
        assert http.request("POST", gw.url + "/v1/chat/completions", json=body).status == 200
        up.delay(1.0)
        slow = threading.Thread(target=http.request, args=("POST", gw.url + "/v1/chat/completions"),
                                kwargs={"json": body})
        slow.start()
        deadline = time.monotonic() + 10
        while scrape(gw, "gearshift_requests_in_flight") != 1:
            assert time.monotonic() < deadline, "the slow request never showed in flight"
            time.sleep(0.02)
        slow.join()
        _, samples = parse(get(gw, "/metrics").data.decode())
    assert value(samples, "gearshift_requests_in_flight") == 0
    assert value(samples, "gearshift_time_to_first_token_seconds_count", model="small") == 1  # the stream only
    assert value(samples, "gearshift_upstream_duration_seconds_count", model="small", role="primary") == 3
    assert value(samples, "gearshift_tokens_total", model="small", router="gearshift/auto", direction="input") > 0
    assert value(samples, "gearshift_tokens_total", model="small", router="gearshift/auto", direction="output") > 0
    assert value(samples, "gearshift_requests_total", router="gearshift/auto", model="small", status="200",
                 endpoint="chat") == 3


def scrape(gw, name: str) -> float:  # type: ignore[no-untyped-def]
    return value(parse(get(gw, "/metrics").data.decode())[1], name)
