"""Requests without a valid key leave no trace and get no trace id; trace ids are unpredictable."""

from __future__ import annotations

import json
import random
import re
import time

import pytest
import urllib3

from gearshift.gateway.server import running
from gearshift.trace import Trace
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config

http = urllib3.PoolManager()
BODY = json.dumps({"model": "gearshift/auto", "messages": [{"role": "user", "content": "hi"}]})


def test_keyless_requests_are_counted_not_traced(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_TEST_UPSTREAM_KEY", "sk-up")
    with FakeUpstream.running(models=("fake-small", "fake-large")) as up, \
            running(gateway_config(up.url, tmp_path, client_keys=[{"name": "app", "key": "k-1"}])) as gw:
        for i in range(30):
            auth = {} if i % 2 else {"Authorization": "Bearer wrong"}
            r = http.request("POST", gw.url + "/v1/chat/completions", body=BODY, headers=auth)
            assert r.status == 401 and json.loads(r.data)["error"]["code"] == "invalid_api_key"
            assert "x-gearshift-trace-id" not in r.headers
        assert http.request("GET", gw.url + "/v1/models").status == 401
        ok = http.request("POST", gw.url + "/v1/chat/completions", body=BODY, headers={"Authorization": "Bearer k-1"})
        assert ok.status == 200
        metrics = http.request("GET", gw.url + "/metrics").data.decode()
        assert "gearshift_unauthenticated_requests_total 31" in metrics
        deadline = time.monotonic() + 10
        while gw.gateway.writer.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        rows = list(gw.gateway.store.traces())
    assert [r["id"] for r in rows] == [ok.headers["x-gearshift-trace-id"]]


def test_trace_ids_do_not_come_from_the_seedable_generator() -> None:
    random.seed(7)
    first = Trace(router="", requested_model="").id
    random.seed(7)
    second = Trace(router="", requested_model="").id
    assert first != second
    assert re.fullmatch(r"[0-9a-f]{32}", first)


def test_a_key_uses_only_its_routers_and_models_and_its_team_owns_the_spend(tmp_path) -> None:
    keys = [{"name": "app", "key": "k-app", "team": "search", "routers": ["gearshift/auto"], "models": []},
            {"name": "ops", "key": "k-ops"}]
    with FakeUpstream.running(models=("fake-small", "fake-large")) as up, \
            running(gateway_config(up.url, tmp_path, client_keys=keys, teams={"search": {}})) as gw:
        def ask(key: str, model: str) -> urllib3.BaseHTTPResponse:
            body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
            return http.request("POST", gw.url + "/v1/chat/completions", body=body,
                                headers={"Authorization": f"Bearer {key}"})

        ok = ask("k-app", "gearshift/auto")
        assert ok.status == 200
        for model in ("gearshift/strong", "large"):
            refused = ask("k-app", model)
            error = json.loads(refused.data)["error"]
            assert refused.status == 403 and error["code"] == "model_not_allowed" and error["param"] == "model"
            assert repr(model) in error["message"] and "k-app" not in error["message"]
        assert ask("k-ops", "gearshift/strong").status == 200 and ask("k-ops", "large").status == 200
        deadline = time.monotonic() + 10
        while gw.gateway.writer.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        rows = {r["id"]: r for r in gw.gateway.store.traces()}
    app_trace = rows[ok.headers["x-gearshift-trace-id"]]
    assert (app_trace["client"], app_trace["team"]) == ("app", "search")
    refused_rows = [r for r in rows.values() if r["status"] == 403]
    assert len(refused_rows) == 2 and all(r["team"] == "search" and r["cost_usd"] == 0 for r in refused_rows)
    assert {r["team"] for r in rows.values() if r["client"] == "ops"} == {None}


def test_a_key_sees_its_own_and_its_teams_numbers_and_nobody_elses(tmp_path) -> None:
    keys = [{"name": "app", "key": "k-app", "team": "search", "limits": {"rpm": 100, "usd_day": 5}},
            {"name": "batch", "key": "k-batch", "team": "search"},
            {"name": "ops", "key": "k-ops"}]
    teams = {"search": {"limits": {"usd_month": 50}}}
    with FakeUpstream.running(models=("fake-small", "fake-large")) as up, \
            running(gateway_config(up.url, tmp_path, client_keys=keys, teams=teams)) as gw:
        sent = {"k-app": 3, "k-batch": 2, "k-ops": 4}
        for key, n in sent.items():
            for _ in range(n):
                r = http.request("POST", gw.url + "/v1/chat/completions", body=BODY,
                                 headers={"Authorization": f"Bearer {key}"})
                assert r.status == 200
        deadline = time.monotonic() + 10
        while gw.gateway.writer.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        r = http.request("GET", gw.url + "/v1/key", headers={"Authorization": "Bearer k-app"})
        assert http.request("GET", gw.url + "/v1/key").status == 401
        rows = list(gw.gateway.store.traces())
    body = json.loads(r.data)
    assert r.status == 200 and body["name"] == "app" and body["team"] == "search"
    assert body["limits"]["rpm"] == 100 and body["limits"]["usd_day"] == 5 and body["team_limits"]["usd_month"] == 50
    key, team = body["month"]["key"], body["month"]["team"]
    assert key["requests"] == 3 and team["requests"] == 5
    spend = {c: sum(t["cost_usd"] for t in rows if t["client"] == c) for c in ("app", "batch")}
    assert key["spend_usd"] == pytest.approx(spend["app"]) and team["spend_usd"] == pytest.approx(sum(spend.values()))
    assert "ops" not in r.data.decode() and "k-app" not in r.data.decode()


def test_an_open_gateway_has_no_key_to_describe(tmp_path) -> None:
    with FakeUpstream.running(models=("fake-small", "fake-large")) as up, \
            running(gateway_config(up.url, tmp_path, server={"open": True})) as gw:
        r = http.request("GET", gw.url + "/v1/key")
    assert r.status == 404 and "server.open" in json.loads(r.data)["error"]["message"]
