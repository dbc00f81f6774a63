"""The gateway through real sockets: the official openai client -> gearshift -> a fake upstream."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp  # noqa: F401  (the gateway's HTTP stack; imported so a missing install fails loudly)
import openai
import pytest
import urllib3

from gearshift.gateway.server import running
from gearshift.store.sqlite import SQLiteStore
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config

UPSTREAM_KEY = "sk-upstream-SECRET-1234567890"


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_TEST_UPSTREAM_KEY", UPSTREAM_KEY)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream.running(models=("fake-small", "fake-large", "fake-claude")) as up:
        yield up


@pytest.fixture
def gateway(upstream: FakeUpstream, tmp_path: Path):  # type: ignore[no-untyped-def]
    with running(gateway_config(upstream.url, tmp_path)) as gw:
        yield gw


def client(gw, **kw) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=kw.pop("api_key", "none"), max_retries=0, **kw)


def stored(gw) -> list[dict]:  # type: ignore[no-untyped-def]
    """Traces once the writer has flushed them."""
    deadline = time.monotonic() + 10
    while gw.gateway.writer.pending() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    return list(gw.gateway.store.traces())


def test_chat_completion_routes_and_reports_headers(gateway, upstream: FakeUpstream) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gearshift/auto", messages=[{"role": "user", "content": "hello there"}])
    c = raw.parse()
    assert c.choices[0].message.content == "echo: hello there"
    assert raw.headers["x-gearshift-model"] == "small"
    assert raw.headers["x-gearshift-router"] == "gearshift/auto"
    assert "default" in raw.headers["x-gearshift-reason"]
    u = c.usage
    assert u is not None and u.prompt_tokens > 0
    expected = (u.prompt_tokens * 1.0 + u.completion_tokens * 2.0) / 1e6
    assert float(raw.headers["x-gearshift-cost-usd"]) == pytest.approx(expected, rel=1e-6)
    trace_id = raw.headers["x-gearshift-trace-id"]
    [t] = stored(gateway)
    assert t["id"] == trace_id and t["final_model"] == "small" and not t["streamed"]
    assert t["calls"][0]["role"] == "primary" and t["calls"][0]["cost_usd"] == pytest.approx(expected)
    # The upstream got gearshift's key, the upstream model id, and nothing of the client's key.
    rec = upstream.requests[-1]
    assert rec.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert rec.json["model"] == "fake-small"


def test_metadata_routes_and_unknown_fields_pass_through(gateway, upstream: FakeUpstream) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gearshift/auto", messages=[{"role": "user", "content": "hi"}], temperature=0.3,
        extra_headers={"x-gearshift-tier": "pro"}, extra_body={"custom_field": {"a": [1, 2]}, "top_k": 5})
    assert raw.headers["x-gearshift-model"] == "large"
    assert "vip" in raw.headers["x-gearshift-reason"]
    rec = upstream.requests[-1].json
    assert rec["custom_field"] == {"a": [1, 2]} and rec["top_k"] == 5 and rec["temperature"] == 0.3
    # Body metadata routes too.
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gearshift/auto", messages=[{"role": "user", "content": "hi"}], metadata={"tier": "pro"})
    assert raw.headers["x-gearshift-model"] == "large"


def test_streaming_through_openai_client(gateway, upstream: FakeUpstream) -> None:
    stream = client(gateway).chat.completions.create(
        model="gearshift/auto", messages=[{"role": "user", "content": "stream me please"}], stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text == "echo: stream me please"
    [t] = stored(gateway)
    assert t["streamed"] and t["status"] == 200
    call = t["calls"][0]
    assert call["output_tokens"] > 0 and call["cost_usd"] > 0 and not call["usage_estimated"]
    assert t["response"] == text


def test_stream_usage_only_when_asked(gateway) -> None:
    stream = client(gateway).chat.completions.create(
        model="gearshift/auto", messages=[{"role": "user", "content": "x y z"}], stream=True,
        stream_options={"include_usage": True})
    usage = [ch.usage for ch in stream if ch.usage]
    assert len(usage) == 1 and usage[0].completion_tokens > 0


def test_raw_sse_ends_with_cost_comment_and_done(gateway) -> None:
    http = urllib3.PoolManager()
    r = http.request("POST", gateway.url + "/v1/chat/completions", body=json.dumps(
        {"model": "gearshift/auto", "stream": True, "messages": [{"role": "user", "content": "a b"}]}),
        headers={"Content-Type": "application/json"})
    assert r.status == 200 and r.headers["x-gearshift-cost-usd"] == "pending"
    lines = [ln for ln in r.data.decode().split("\n") if ln]
    assert lines[-1] == "data: [DONE]"
    assert lines[-2].startswith(": gearshift cost_usd=") and "model=small" in lines[-2]


def test_anthropic_model_non_stream_and_stream(gateway, upstream: FakeUpstream) -> None:
    c = client(gateway)
    r = c.chat.completions.create(model="claude", messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello claude"}])
    assert r.choices[0].message.content == "echo: hello claude"
    assert r.choices[0].finish_reason == "stop"
    rec = upstream.requests[-1]
    assert rec.path == "/v1/messages" and rec.json["system"] == "be brief"
    assert rec.headers["x-api-key"] == UPSTREAM_KEY
    text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "stream claude"}], stream=True) if ch.choices)
    assert text == "echo: stream claude"


def test_anthropic_model_answers_structured_outputs_for_the_openai_sdk(gateway, upstream: FakeUpstream) -> None:
    from pydantic import BaseModel

    class Trip(BaseModel):
        city: str
        days: int

    c = client(gateway)
    upstream.reply('{"city": "Lyon", "days": 3}')
    r = c.chat.completions.parse(model="claude", messages=[{"role": "user", "content": "plan a trip"}],
                                 response_format=Trip)
    assert r.choices[0].message.parsed == Trip(city="Lyon", days=3) and r.choices[0].finish_reason == "stop"
    sent = upstream.requests[-1].json
    assert sent["tool_choice"]["type"] == "tool" and sent["tools"][0]["input_schema"]["required"] == ["city", "days"]
    upstream.reply('{"city": "Oslo", "days": 2}')
    text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "plan"}], stream=True,
        response_format={"type": "json_object"}) if ch.choices)
    assert json.loads(text) == {"city": "Oslo", "days": 2}


def test_models_and_health(gateway) -> None:
    ids = {m.id for m in client(gateway).models.list()}
    assert {"gearshift/auto", "gearshift/strong", "small", "large", "claude"} <= ids
    # One router (its id has a slash) and one model, in OpenAI's shape; an unknown id is OpenAI's 404.
    router = client(gateway).models.retrieve("gearshift/auto")
    assert router.id == "gearshift/auto" and router.object == "model" and router.owned_by == "gearshift"
    assert router.model_extra and router.model_extra["gearshift"] == {"kind": "rules", "models": ["large", "small"]}
    model = client(gateway).models.retrieve("claude")
    assert model.owned_by == "anthropic" and model.model_extra and model.model_extra["gearshift"]["rank"] == 8
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client(gateway).models.retrieve("gpt-17")
    http = urllib3.PoolManager()
    r = http.request("GET", gateway.url + "/health")
    assert r.status == 200 and json.loads(r.data)["status"] == "ok"


@pytest.mark.parametrize("failure", ["fail500", "timeout", "reset", "fail429"])
def test_fallback_on_retryable_upstream_failure(gateway, upstream: FakeUpstream, failure: str) -> None:
    if failure == "fail500":
        upstream.fail(500, model="fake-small")
    elif failure == "fail429":
        upstream.fail(429, model="fake-small")
    elif failure == "timeout":
        upstream.delay(5, model="fake-small")
    else:
        upstream.reset(model="fake-small")
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gearshift/auto", messages=[{"role": "user", "content": "fall back"}])
    assert raw.parse().choices[0].message.content == "echo: fall back"
    assert raw.headers["x-gearshift-model"] == "large"
    [t] = stored(gateway)
    roles = [(c["model"], c["role"], c["status"]) for c in t["calls"]]
    assert roles[0][:2] == ("small", "primary") and roles[0][2] != 200
    assert roles[-1] == ("large", "fallback", 200)
    if failure == "timeout":
        assert roles[0][2] == 504


def test_retries_before_fallback(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = gateway_config(upstream.url, tmp_path)
    small = config.models["small"].model_copy(update={"retries": 2})
    config = config.model_copy(update={"models": {**config.models, "small": small}})
    upstream.fail(503, times=2, model="fake-small")
    with running(config) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(
            model="gearshift/auto", messages=[{"role": "user", "content": "retry"}])
        assert raw.headers["x-gearshift-model"] == "small"
        [t] = stored(gw)
    assert [(c["attempt"], c["status"]) for c in t["calls"]] == [(1, 503), (2, 503), (3, 200)]


def test_every_upstream_failed_is_502_and_timeouts_504(gateway, upstream: FakeUpstream) -> None:
    upstream.fail(500, times=None)
    with pytest.raises(openai.APIStatusError) as info:
        client(gateway).chat.completions.create(model="gearshift/auto", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert "every upstream failed" in info.value.message and "small" in info.value.message
    upstream.clear()
    upstream.delay(5, times=None)
    with pytest.raises(openai.APIStatusError) as info:
        client(gateway).chat.completions.create(model="gearshift/auto", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 504


def test_stream_falls_back_only_before_first_byte(gateway, upstream: FakeUpstream) -> None:
    upstream.fail(500, model="fake-small")
    c = client(gateway)
    text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="gearshift/auto", messages=[{"role": "user", "content": "before"}], stream=True) if ch.choices)
    assert text == "echo: before"
    assert upstream.count(model="fake-large") == 1
    upstream.clear()
    # Once chunks went to the client, a broken upstream ends the stream with an error event, no fallback.
    upstream.drop(after=1, model="fake-small")
    with pytest.raises(openai.APIError):
        for _ in c.chat.completions.create(model="gearshift/auto", stream=True,
                                           messages=[{"role": "user", "content": "one two three four"}]):
            pass
    assert upstream.count(model="fake-large") == 0  # the mid-stream failure did not fall back
    traces = stored(gateway)
    assert traces[-1]["status"] != 200 and traces[-1]["streamed"]


def test_upstream_client_error_is_passed_through(gateway, upstream: FakeUpstream) -> None:
    upstream.fail(400, model="fake-small", message="max_tokens is too large")
    with pytest.raises(openai.BadRequestError) as info:
        client(gateway).chat.completions.create(model="gearshift/auto", messages=[{"role": "user", "content": "x"}])
    assert "max_tokens is too large" in info.value.message
    assert upstream.count(model="fake-large") == 0  # a bad request is not retried elsewhere


def test_secrets_never_leak(upstream: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The upstream rejects the key and echoes it back (as real upstreams do): it must go no further.
    upstream.api_key = "the-right-key"
    caplog.set_level(logging.DEBUG)
    with running(gateway_config(upstream.url, tmp_path)) as gw:
        with pytest.raises(openai.APIStatusError) as info:
            client(gw).chat.completions.create(model="gearshift/auto", messages=[{"role": "user", "content": "x"}])
        body = json.dumps(info.value.body)
        traces = json.dumps(stored(gw))
    assert info.value.status_code == 502
    assert UPSTREAM_KEY not in body and UPSTREAM_KEY not in traces and UPSTREAM_KEY not in caplog.text
    assert "credentials" in body or "rejected" in body


@pytest.mark.parametrize("echo", [f"{UPSTREAM_KEY[:8]}...{UPSTREAM_KEY[-4:]}", f"{UPSTREAM_KEY[:7]}{'*' * 20}{UPSTREAM_KEY[-4:]}",
                                  UPSTREAM_KEY[:12], UPSTREAM_KEY[-10:]])
def test_fragments_of_a_key_never_leak(upstream: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                       echo: str) -> None:
    # Upstreams echo keys in part (`sk-proj-****1234`); any start-and-end or long run of the key is masked.
    upstream.fail(400, times=None, message=f"Incorrect API key provided: {echo}. Find your key at ...")
    caplog.set_level(logging.DEBUG)
    with running(gateway_config(upstream.url, tmp_path)) as gw:
        with pytest.raises(openai.APIStatusError) as info:
            client(gw).chat.completions.create(model="gearshift/auto", messages=[{"role": "user", "content": "x"}])
        body = json.dumps(info.value.body)
        traces = json.dumps(stored(gw))
    assert "Incorrect API key provided: ***." in body
    for text in (body, traces, caplog.text):
        assert echo not in text and UPSTREAM_KEY[:8] not in text and UPSTREAM_KEY[-8:] not in text


def test_trace_persists_across_restart(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = gateway_config(upstream.url, tmp_path)
    with running(config) as gw:
        for i in range(5):
            client(gw).chat.completions.create(model="gearshift/auto", messages=[{"role": "user", "content": f"q{i}"}])
    store = SQLiteStore(tmp_path / "traces.db")
    assert store.count() == 5
    store.close()
    with running(config) as gw:
        client(gw).chat.completions.create(model="gearshift/strong", messages=[{"role": "user", "content": "again"}])
    store = SQLiteStore(tmp_path / "traces.db")
    rows = list(store.traces())
    assert len(rows) == 6 and rows[-1]["final_model"] == "large"
    assert [r["prompt"] for r in rows[:5]] == [f"q{i}" for i in range(5)]


def test_metrics_endpoint_counts_requests(gateway, upstream: FakeUpstream) -> None:
    c = client(gateway)
    for _ in range(3):
        c.chat.completions.create(model="gearshift/auto", messages=[{"role": "user", "content": "m"}])
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "m"}])
    r = urllib3.PoolManager().request("GET", gateway.url + "/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = r.data.decode()
    ok = [ln for ln in text.splitlines() if ln.startswith("gearshift_requests_total{") and 'status="200"' in ln]
    assert ok and sum(float(ln.rsplit(" ", 1)[1]) for ln in ok) == 3
    assert any(ln.startswith("gearshift_requests_total{") and 'status="404"' in ln for ln in text.splitlines())
    assert "# TYPE gearshift_requests_total counter" in text
