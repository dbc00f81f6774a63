"""Rate limits and budgets of keys and teams, through real sockets: 429 with Retry-After and the
x-ratelimit-* headers (on answers too), tokens settled with the real usage, budget downshift then
refusal with the spend counted from the traces, the Messages dialect's shape, and /metrics."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import urllib3

from gearshift.gateway.limits import Limiter, reset_text, window
from gearshift.gateway.server import running
from gearshift.principal import Allowance, Principal
from gearshift.request import ChatRequest
from gearshift.store.sqlite import SQLiteStore
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config, settle

http = urllib3.PoolManager()
HI = [{"role": "user", "content": "hi"}]
T0 = dt.datetime(2026, 3, 31, 23, 59, 30, tzinfo=dt.UTC).timestamp()  # 30 s before a new minute, day and month

pytestmark = pytest.mark.usefixtures("upstream_key")


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_windows_end_on_the_minute_the_utc_day_and_the_month() -> None:
    assert window("rpm", T0) == (str(int(T0) - 30), T0 + 30)
    assert window("usd_day", T0) == ("2026-03-31", T0 + 30)
    assert window("usd_month", T0) == ("2026-03", T0 + 30)
    assert window("usd_month", T0 + 31) == ("2026-04", dt.datetime(2026, 5, 1, tzinfo=dt.UTC).timestamp())
    assert [reset_text(s) for s in (0.02, 1, 59.2, 360, 7384)] == ["20ms", "1s", "1m0s", "6m0s", "2h3m4s"]


def test_settled_tokens_replace_the_estimate_and_the_store_sums_replicas(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    clock = Clock()
    a, b = Limiter(store, clock), Limiter(store, clock)
    key = Principal(name="app", allowance=Allowance(tpm=1000))
    req = ChatRequest(body={"model": "m", "messages": HI, "max_tokens": 100})
    adm = a.admit(key, req)
    assert adm is not None and adm.headers["x-ratelimit-remaining-tokens"] == str(1000 - 100 - req.estimated_tokens())
    from gearshift.trace import Call, Trace

    trace = Trace(router="r", requested_model="m", calls=[Call(model="m", role="primary", input_tokens=7,
                                                               output_tokens=3)])
    a.settle(adm, trace)
    a.sync()
    b.watch([key])
    b.admit(key, req)  # b sees a's 10 tokens only after a sync
    b.sync()
    a.sync()
    used = 10 + 100 + req.estimated_tokens()
    tpm_key = ("key", "app", "tpm", window("tpm", T0)[0])
    assert store.add_limit_usage({}, [tpm_key], T0)[tpm_key] == used
    assert a._used(tpm_key) == b._used(tpm_key) == used


def test_a_teams_requests_and_a_keys_tokens_per_minute(tmp_path: Path) -> None:
    from gearshift.errors import LimitExceeded

    clock = Clock()
    limiter = Limiter(SQLiteStore(tmp_path / "t.db"), clock)
    team = Allowance(rpm=2)
    a = Principal(name="a", team="ops", team_allowance=team, allowance=Allowance(tpm=100))
    b = Principal(name="b", team="ops", team_allowance=team)
    req = ChatRequest(body={"model": "m", "messages": HI, "max_tokens": 50})
    assert limiter.admit(a, req) is not None and limiter.admit(b, req) is not None
    with pytest.raises(LimitExceeded) as refused:
        limiter.admit(b, req)
    assert (refused.value.scope, refused.value.reason, refused.value.retry_after) == ("team", "rpm", 30.0)
    assert refused.value.headers()["x-ratelimit-remaining-requests"] == "0"
    clock.now += 30
    assert limiter.admit(a, req) is not None  # 50 + the prompt of the key's 100 tokens a minute
    with pytest.raises(LimitExceeded, match="key 'a' reached its limit of 100 tokens per minute"):
        limiter.admit(a, req)


def limited_config(upstream: FakeUpstream, tmp_path: Path, **extra: Any) -> Any:
    keys = [{"name": "app", "key": "k-app", "team": "search", "limits": {"rpm": 3}},
            {"name": "bot", "key": "k-bot", "team": "search"},
            {"name": "free", "key": "k-free"}]
    return gateway_config(upstream.url, tmp_path, client_keys=keys,
                          teams={"search": {"limits": {"tpm": 400}}}, **extra)


def post(gw: Any, key: str, model: str = "gearshift/auto", **body: Any) -> urllib3.BaseHTTPResponse:
    return http.request("POST", gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                        body=json.dumps({"model": model, "messages": HI, **body}))


def test_requests_per_minute_per_key_and_tokens_per_minute_per_team(upstream: FakeUpstream, tmp_path: Path) -> None:
    with running(limited_config(upstream, tmp_path)) as gw:
        clock = gw.gateway.limiter.clock = Clock()
        answers = [post(gw, "k-app", max_tokens=20) for _ in range(3)]
        assert [r.status for r in answers] == [200, 200, 200]
        assert [r.headers["x-ratelimit-remaining-requests"] for r in answers] == ["2", "1", "0"]
        assert {r.headers["x-ratelimit-limit-requests"] for r in answers} == {"3"}
        assert {r.headers["x-ratelimit-reset-requests"] for r in answers} == {"30s"}
        assert {r.headers["x-ratelimit-limit-tokens"] for r in answers} == {"400"}  # the team's
        refused = post(gw, "k-app", max_tokens=20)
        error = json.loads(refused.data)["error"]
        assert refused.status == 429 and refused.headers["retry-after"] == "30"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
        assert error["message"] == "key 'app' reached its limit of 3 requests per minute (3 used); it resets in 30s"
        assert post(gw, "k-free").headers.get("x-ratelimit-limit-requests") is None  # an unlimited key: none
        # The team's 400 tokens a minute hold for its keys together; a request reserves its prompt and
        # max_tokens, and after the answer counts what it really used.
        small = post(gw, "k-bot", max_tokens=20)
        assert small.status == 200 and int(small.headers["x-ratelimit-remaining-tokens"]) < 400 - 20
        big = post(gw, "k-bot", max_tokens=380)
        assert big.status == 429 and "retry-after" in big.headers
        message = json.loads(big.data)["error"]["message"]
        assert message.startswith("team 'search' reached its limit of 400 tokens per minute (")
        assert message.endswith(" used, this request needs 384); it resets in 30s")
        clock.now += 30  # the next minute: both windows start again
        assert post(gw, "k-app", max_tokens=20).headers["x-ratelimit-remaining-requests"] == "2"
        assert post(gw, "k-bot", max_tokens=380).status == 200
        metrics = http.request("GET", gw.url + "/metrics").data.decode()
    assert 'gearshift_limited_requests_total{scope="key",reason="rpm"} 1' in metrics
    assert 'gearshift_limited_requests_total{scope="team",reason="tpm"} 1' in metrics


def test_a_streamed_answer_carries_the_headers_and_settles_its_tokens(upstream: FakeUpstream, tmp_path: Path) -> None:
    with running(limited_config(upstream, tmp_path)) as gw:
        gw.gateway.limiter.clock = Clock()
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k-bot", max_retries=0)
        with client.chat.completions.with_streaming_response.create(
                model="gearshift/auto", messages=HI, max_tokens=300, stream=True,
                stream_options={"include_usage": True}) as raw:
            assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 100  # 300 reserved before the call
            list(raw.iter_lines())
        # The real usage (a few tokens) replaced the 300 reserved: the team has room again.
        assert post(gw, "k-bot", max_tokens=300).status == 200


def test_the_messages_dialect_refuses_in_anthropic_shape(upstream: FakeUpstream, tmp_path: Path) -> None:
    with running(limited_config(upstream, tmp_path)) as gw:
        gw.gateway.limiter.clock = Clock()
        client = anthropic.Anthropic(base_url=gw.url, api_key="k-app", max_retries=0)
        for _ in range(3):
            raw = client.messages.with_raw_response.create(model="gearshift/auto", max_tokens=20, messages=HI)
            assert raw.headers["x-ratelimit-limit-requests"] == "3"
        with pytest.raises(anthropic.RateLimitError) as refused:
            client.messages.create(model="gearshift/auto", max_tokens=20, messages=HI)
    assert refused.value.status_code == 429 and refused.value.response.headers["retry-after"] == "30"
    body = refused.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "3 requests per minute" in body["error"]["message"]


def test_a_budget_downshifts_near_its_end_then_refuses(upstream: FakeUpstream, tmp_path: Path) -> None:
    keys = [{"name": "app", "key": "k-app", "limits": {"usd_day": 0.000405}}]
    routers = {"gearshift/strong": {"kind": "fixed", "model": "large",
                                    "on_budget": {"at": 0.5, "router": "gearshift/cheap"}},
               "gearshift/cheap": {"kind": "fixed", "model": "small"}}
    cfg = gateway_config(upstream.url, tmp_path, client_keys=keys, routers=routers)
    with running(cfg) as gw:
        gw.gateway.limiter.clock = Clock()
        served = []
        while (r := post(gw, "k-app", "gearshift/strong")).status == 200:
            served.append((r.headers["x-gearshift-model"], r.headers["x-gearshift-reason"]))
            assert len(served) < 200
        error = json.loads(r.data)["error"]
        settle(gw)
        traces = list(gw.gateway.store.traces())
    models = [m for m, _ in served]
    first_cheap = models.index("small")
    assert first_cheap > 0 and set(models[:first_cheap]) == {"large"} and set(models[first_cheap:]) == {"small"}
    # The reason says why: the share used, whose budget, and where it went.
    assert served[first_cheap][1].startswith("budget ") and "used (key app, day): downshifted to gearshift/cheap" \
        in served[first_cheap][1]
    spent = sum(t["cost_usd"] for t in traces)  # the spend counted from the stored traces
    before_cheap = sum(t["cost_usd"] for t in traces[:first_cheap - 1])
    assert before_cheap < 0.0002025 <= before_cheap + traces[first_cheap - 1]["cost_usd"]
    assert spent >= 0.000405 and spent - traces[len(served) - 1]["cost_usd"] < 0.000405
    assert r.status == 429 and error["code"] == "budget_exceeded" and r.headers["x-should-retry"] == "false"
    assert error["message"] == f"key 'app' spent ${spent:.6g} of its $0.000405 budget per day (UTC); it resets in 30s"
    assert int(r.headers["retry-after"]) == 30
