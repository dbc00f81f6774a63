"""/health and /metrics: open by default; with server.metrics_key_env, details need that key and
liveness stays open; a named variable that is not set stops the start."""

from __future__ import annotations

import json

import pytest
import urllib3

from gearshift.errors import ConfigError
from gearshift.gateway.server import running
from tests.gateway.test_errors import check_error
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config

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
