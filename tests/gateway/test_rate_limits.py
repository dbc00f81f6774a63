"""Rate limits and sick upstreams through real sockets: Retry-After honoured or answered, x-should-retry,
and per-model circuit breakers (skipped models, /health and /metrics)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3

from gearshift.config import BreakerConfig, Config, Timeouts
from gearshift.gateway.server import running
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config

HI = [{"role": "user", "content": "hi"}]


pytestmark = pytest.mark.usefixtures("upstream_key")


def config(upstream: FakeUpstream, tmp_path: Path, **small: Any) -> Config:
    """The shared gateway config with the `small` model's settings changed."""
    cfg = gateway_config(upstream.url, tmp_path)
    cfg.models["small"] = cfg.models["small"].model_copy(update=small)
    return cfg


def client(gw: Any, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=retries)


def ask(gw: Any, model: str = "gearshift/auto", retries: int = 0) -> Any:
    return client(gw, retries).chat.completions.with_raw_response.create(model=model, messages=HI)


def test_retry_after_within_the_deadline_is_waited_out(upstream: FakeUpstream, tmp_path: Path) -> None:
    cfg = config(upstream, tmp_path, retries=1, timeout=Timeouts(connect=1, read=5))
    upstream.fail(429, model="fake-small", headers={"retry-after": "1"})
    with running(cfg) as gw:
        raw = ask(gw)
    assert raw.headers["x-gearshift-model"] == "small"  # waited the second out, then the same model answered
    assert upstream.count(model="fake-small") == 2 and upstream.count(model="fake-large") == 0


def test_retry_after_past_the_deadline_moves_to_the_fallback_at_once(upstream: FakeUpstream, tmp_path: Path) -> None:
    cfg = config(upstream, tmp_path, retries=2, timeout=Timeouts(connect=1, read=5))
    upstream.fail(429, model="fake-small", headers={"retry-after-ms": "30000"})
    with running(cfg) as gw:
        raw = ask(gw)
        assert raw.headers["x-gearshift-model"] == "large"
        assert upstream.count(model="fake-small") == 1  # no retries spent on a model that asked for 30 s
        # Other requests skip the rate-limited model until its Retry-After has passed.
        assert ask(gw).headers["x-gearshift-model"] == "large"
        assert upstream.count(model="fake-small") == 1 and upstream.count(model="fake-large") == 2


def test_every_route_rate_limited_answers_429_with_the_shortest_retry_after(upstream: FakeUpstream,
                                                                              tmp_path: Path) -> None:
    upstream.fail(429, model="fake-small", headers={"retry-after": "30"})
    upstream.fail(429, model="fake-large", headers={"retry-after": "20"})
    with running(config(upstream, tmp_path)) as gw:
        with pytest.raises(openai.RateLimitError) as info:
            ask(gw)
        r = info.value.response
        assert r.status_code == 429 and r.headers["retry-after"] == "20"
        assert r.headers["x-should-retry"] == "true"
        assert info.value.code == "rate_limited" and "rate limited" in info.value.message
        assert upstream.count() == 2
        # While both wait, a second request is answered 429 without calling either upstream.
        with pytest.raises(openai.RateLimitError) as again:
            ask(gw)
        assert 18 <= float(again.value.response.headers["retry-after"]) <= 20
        assert upstream.count() == 2


def test_retry_after_as_an_http_date(upstream: FakeUpstream, tmp_path: Path) -> None:
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    upstream.fail(429, model="fake-large", headers={"retry-after": when})
    with running(config(upstream, tmp_path)) as gw, pytest.raises(openai.RateLimitError) as info:
        ask(gw, model="large")
    assert 100 <= int(info.value.response.headers["retry-after"]) <= 121


def test_failures_a_client_retry_cannot_fix_say_x_should_retry_false(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.fail(500, times=None, model="fake-small")
    upstream.fail(500, times=None, model="fake-large")
    with running(config(upstream, tmp_path)) as gw:
        # The SDK would retry a 502 twice; told not to, it makes one request: two upstream calls, not six.
        with pytest.raises(openai.InternalServerError) as info:
            ask(gw, retries=2)
        assert info.value.response.status_code == 502
        assert info.value.response.headers["x-should-retry"] == "false"
        assert "retry-after" not in info.value.response.headers
        assert upstream.count() == 2
        upstream.clear()
        upstream.fail(400, model="fake-large", message="bad temperature")
        with pytest.raises(openai.BadRequestError) as bad:
            ask(gw, model="large", retries=2)
        assert bad.value.response.headers["x-should-retry"] == "false" and upstream.count() == 1


def health(gw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = urllib3.request("GET", gw.url + "/health").json()
    return doc


def test_circuit_opens_after_consecutive_failures_and_skips_the_model(upstream: FakeUpstream,
                                                                       tmp_path: Path) -> None:
    # Open long enough that the checks below finish inside it on a loaded machine (they take ~0.1 s quiet).
    cfg = config(upstream, tmp_path, breaker=BreakerConfig(failures=2, open_seconds=3.0))
    upstream.fail(500, times=None, model="fake-small")
    with running(cfg) as gw:
        for _ in range(2):
            assert ask(gw).headers["x-gearshift-model"] == "large"
        circuit = health(gw)["models"]["small"]
        assert circuit["state"] == "open" and circuit["consecutive_failures"] == 2
        assert circuit["open_until"] > time.time() - 1 and circuit["trips"] == 1
        metrics = urllib3.request("GET", gw.url + "/metrics").data.decode()
        assert 'gearshift_model_circuit_open{model="small"} 1' in metrics
        assert 'gearshift_model_circuit_trips_total{model="small"} 1' in metrics
        assert 'gearshift_model_circuit_open{model="large"} 0' in metrics
        # Open: the sick model costs nothing, its fallback serves at once.
        for _ in range(3):
            assert ask(gw).headers["x-gearshift-model"] == "large"
        assert upstream.count(model="fake-small") == 2
        # Past the open time one trial call goes through; it succeeds, and the circuit closes.
        upstream.clear()
        deadline = time.monotonic() + 10
        while health(gw)["models"]["small"]["state"] == "open" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert health(gw)["models"]["small"]["state"] == "half-open"
        assert ask(gw).headers["x-gearshift-model"] == "small"
        assert health(gw)["models"]["small"] == {"state": "closed", "consecutive_failures": 0, "open_until": None,
                                                 "rate_limited_until": None, "trips": 1}


def test_a_failed_trial_reopens_the_circuit(upstream: FakeUpstream, tmp_path: Path) -> None:
    cfg = config(upstream, tmp_path, retries=3, breaker=BreakerConfig(failures=1, open_seconds=0.3))
    upstream.fail(500, times=None, model="fake-small")
    with running(cfg) as gw:
        assert ask(gw).headers["x-gearshift-model"] == "large"
        assert upstream.count(model="fake-small") == 1  # the circuit opened on the first failure: no retries
        deadline = time.monotonic() + 10
        while health(gw)["models"]["small"]["state"] == "open" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ask(gw).headers["x-gearshift-model"] == "large"
        assert upstream.count(model="fake-small") == 2  # one trial call, no retries
        circuit = health(gw)["models"]["small"]
        assert circuit["state"] == "open" and circuit["trips"] == 2


def test_every_circuit_open_answers_503_with_retry_after(upstream: FakeUpstream, tmp_path: Path) -> None:
    cfg = config(upstream, tmp_path, breaker=BreakerConfig(failures=1, open_seconds=60))
    upstream.fail(500, times=None, model="fake-small")
    with running(cfg) as gw:
        for _ in range(2):  # the failure that opens it, then a request that does not reach the upstream
            with pytest.raises(openai.InternalServerError) as info:
                ask(gw, model="small")
            r = info.value.response
            assert r.status_code == 503 and r.headers["x-should-retry"] == "true"
            assert 58 <= int(r.headers["retry-after"]) <= 60
            assert info.value.code == "circuit_open"
    assert upstream.count(model="fake-small") == 1


def test_a_circuit_opening_on_rate_limits_answers_with_its_open_time(upstream: FakeUpstream,
                                                                       tmp_path: Path) -> None:
    cfg = config(upstream, tmp_path, retries=5, timeout=Timeouts(connect=1, read=5),
                 breaker=BreakerConfig(failures=2, open_seconds=40))
    upstream.fail(429, times=None, model="fake-small", headers={"retry-after": "0.1"})
    with running(cfg) as gw, pytest.raises(openai.InternalServerError) as info:
        ask(gw, model="small")
    assert info.value.response.status_code == 503 and 38 <= int(info.value.response.headers["retry-after"]) <= 40
    assert upstream.count(model="fake-small") == 2  # retries stop when the circuit opens
