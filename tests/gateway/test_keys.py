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
