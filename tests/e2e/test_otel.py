"""OpenTelemetry through real sockets: a gateway on 127.0.0.1 exporting to a real OTLP/HTTP receiver,
with the fake upstream. Span names, parents, GenAI attributes, the incoming traceparent kept and
passed on to the upstream, cascades with gates, streams, shadow work, and nothing at all when off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gearshift import telemetry
from gearshift.gateway.server import running
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config
from tests.support.otlp_receiver import CLIENT, ERROR, SERVER, OTLPReceiver, Span

INCOMING_TRACE = "0af7651916cd43dd8448eb211c80319c"
INCOMING_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"
PROMPT = "How many apples are in 2 boxes of 7?"
GOOD = "Each box holds 7 apples, so 2 boxes hold 2 x 7 = 14 apples.\n#### 14"
BAD = "Each box holds 7 apples, so 2 boxes hold 2 x 7 = 15 apples.\n#### 15"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream.running(models=("fake-small", "fake-large", "fake-claude")) as up:
        yield up


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OTLPReceiver]:
    """A receiver the gateway exports to (by the standard variables), batches sent every 50 ms."""
    with OTLPReceiver.running() as rec:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rec.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
        monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        yield rec


def ask(gw: Any, model: str = "gearshift/auto", headers: dict[str, str] | None = None, **kw: Any) -> Any:
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    return c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], extra_headers=headers or {}, **kw)


def one(spans: list[Span], name: str) -> Span:
    [s] = [s for s in spans if s.name == name]
    return s


def children(spans: list[Span], parent: Span) -> list[str]:
    return [s.name for s in sorted(spans, key=lambda s: s.start) if s.parent_id == parent.span_id]


def no_secrets_or_text(spans: list[Span]) -> None:
    """No attribute carries the upstream key, a header, the prompt or an answer."""
    for s in spans:
        for key, value in s.attributes.items():
            text = str(value)
            assert "sk-test-upstream" not in text and "Bearer" not in text, (s.name, key)
            assert "apples" not in text, (s.name, key)


def test_a_request_keeps_the_incoming_trace_and_passes_it_to_the_upstream(
        upstream: FakeUpstream, receiver: OTLPReceiver, tmp_path: Path) -> None:
    with running(gateway_config(upstream.url, tmp_path)) as gw:
        raw = ask(gw, headers={"traceparent": TRACEPARENT})
    spans = receiver.wait(3)
    request = one(spans, "POST /v1/chat/completions")
    route, call = one(spans, "route gearshift/auto"), one(spans, "chat fake-small")
    assert {s.trace_id for s in spans} == {INCOMING_TRACE}
    assert request.parent_id == INCOMING_SPAN and request.kind == SERVER
    assert children(spans, request) == ["route gearshift/auto", "chat fake-small"]
    assert request.attributes["gearshift.trace_id"] == raw.headers["x-gearshift-trace-id"]
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["gearshift.router"] == "gearshift/auto"
    assert request.service == "gearshift"
    assert route.attributes["gearshift.route.reason"] == "rules: default -> small"
    assert route.attributes["gearshift.route.models"] == ["small", "large"]
    # The upstream call, as the GenAI conventions name it.
    assert call.kind == CLIENT
    a = call.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "fake-small" and a["server.address"] == "127.0.0.1"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["gearshift.cost_usd"] > 0 and a["gearshift.call.attempt"] == 1 and a["gearshift.call.role"] == "primary"
    assert request.start <= route.start <= route.end <= call.start <= call.end <= request.end
    # The upstream got the same trace, with the gateway's request span as its parent.
    version, trace_id, parent, flags = upstream.requests[-1].headers["traceparent"].split("-")
    assert (trace_id, parent, flags) == (INCOMING_TRACE, request.span_id, "01")
    no_secrets_or_text(spans)


def test_a_cascade_that_escalates_shows_each_call_and_gate(
        upstream: FakeUpstream, receiver: OTLPReceiver, tmp_path: Path) -> None:
    routers = {"gearshift/cascade": {"kind": "cascade", "tiers": [
        {"model": "small", "gates": [{"kind": "arithmetic"}, {"kind": "judge", "model": "large"}]},
        {"model": "large"}]}}
    upstream.reply(BAD, model="fake-small")
    upstream.reply("Verdict: PASS", model="fake-large")  # the judge (the arithmetic gate failed already)
    upstream.fail(500, model="fake-large")  # the escalation's first try fails: a retry, seen as its own span
    upstream.reply(GOOD, model="fake-large")
    config = gateway_config(upstream.url, tmp_path, routers=routers)
    models = {**config.models, "large": config.models["large"].model_copy(update={"retries": 1})}
    with running(config.model_copy(update={"models": models})) as gw:
        raw = ask(gw, model="gearshift/cascade")
    spans = receiver.wait(8)
    request = one(spans, "POST /v1/chat/completions")
    assert raw.headers["x-gearshift-model"] == "large"
    assert children(spans, request) == ["route gearshift/cascade", "chat fake-small", "gate arithmetic",
                                        "gate judge", "chat fake-large", "chat fake-large"]
    arithmetic, judge = one(spans, "gate arithmetic"), one(spans, "gate judge")
    assert arithmetic.attributes["gearshift.gate.passed"] is False
    assert arithmetic.attributes["gearshift.gate.model"] == "small"
    assert judge.attributes["gearshift.gate.passed"] is True and judge.attributes["gearshift.gate.score"] == 1.0
    [judged] = [s for s in spans if s.parent_id == judge.span_id]
    assert judged.name == "chat fake-large" and judged.attributes["gearshift.call.role"] == "judge"
    assert judge.attributes["gearshift.gate.cost_usd"] == pytest.approx(judged.attributes["gearshift.cost_usd"])
    failed, retried = sorted((s for s in spans if s.parent_id == request.span_id and s.name == "chat fake-large"),
                             key=lambda s: s.start)
    assert failed.status == ERROR and failed.attributes["error.type"] == "500"
    assert (failed.attributes["gearshift.call.attempt"], retried.attributes["gearshift.call.attempt"]) == (1, 2)
    assert retried.attributes["gearshift.call.role"] == "escalation"
    assert request.attributes["gearshift.cost_usd"] == pytest.approx(
        sum(s.attributes["gearshift.cost_usd"] for s in spans if s.kind == CLIENT))
    no_secrets_or_text(spans)


def test_a_stream_s_span_ends_with_the_stream(upstream: FakeUpstream, receiver: OTLPReceiver, tmp_path: Path) -> None:
    with running(gateway_config(upstream.url, tmp_path)) as gw:
        c = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        chunks = list(c.chat.completions.create(model="gearshift/auto", stream=True,
                                                messages=[{"role": "user", "content": PROMPT}]))
    assert chunks
    spans = receiver.wait(3)
    request, call = one(spans, "POST /v1/chat/completions"), one(spans, "chat fake-small")
    assert request.attributes["gearshift.streamed"] is True
    assert call.parent_id == request.span_id and call.attributes["gen_ai.usage.output_tokens"] > 0
    assert call.end <= request.end  # the request's span ended after the streamed call did


def test_shadow_work_has_its_own_span_under_the_request(
        upstream: FakeUpstream, receiver: OTLPReceiver, tmp_path: Path) -> None:
    routers = {"gearshift/auto": {"kind": "cascade", "tiers": [{"model": "small", "gates": [{"kind": "arithmetic"}]},
                                                               {"model": "large"}], "shadow": {"rate": 1.0}}}
    upstream.reply(GOOD, model="fake-small")
    with running(gateway_config(upstream.url, tmp_path, routers=routers)) as gw:
        ask(gw, headers={"traceparent": TRACEPARENT})
        spans = receiver.wait(1, name="shadow large")
    spans = receiver.wait(6)
    request, shadow = one(spans, "POST /v1/chat/completions"), one(spans, "shadow large")
    assert children(spans, request) == ["route gearshift/auto", "chat fake-small", "gate arithmetic", "shadow large"]
    assert request.attributes["gearshift.shadowed"] is True
    assert shadow.trace_id == INCOMING_TRACE and shadow.parent_id == request.span_id
    assert shadow.attributes["gearshift.trace_id"] == request.attributes["gearshift.trace_id"]
    [reference] = [s for s in spans if s.parent_id == shadow.span_id]
    assert reference.name == "chat fake-large" and reference.attributes["gearshift.call.role"] == "shadow"
    assert shadow.attributes["gearshift.cost_usd"] == pytest.approx(reference.attributes["gearshift.cost_usd"])
    # The reference model's upstream call carries the shadow's span as its parent.
    sent = [r.headers["traceparent"] for r in upstream.requests if r.model == "fake-large"]
    assert sent == [f"00-{INCOMING_TRACE}-{shadow.span_id}-01"]
    no_secrets_or_text(spans)


def test_nothing_is_exported_or_sent_when_no_endpoint_is_set(upstream: FakeUpstream, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPReceiver.running() as rec:
        for name in telemetry.ENDPOINT_VARS:
            monkeypatch.delenv(name, raising=False)
        with running(gateway_config(upstream.url, tmp_path)) as gw:
            assert telemetry.tracer is None
            ask(gw, headers={"traceparent": TRACEPARENT})
        assert rec.posts == 0
    assert "traceparent" not in upstream.requests[-1].headers


def test_a_scoring_routers_decision_carries_its_score_and_threshold(
        upstream: FakeUpstream, receiver: OTLPReceiver, tmp_path: Path) -> None:
    routers = {"gearshift/coin": {"kind": "random", "weights": {"small": 1, "large": 1}, "seed": 3}}
    with running(gateway_config(upstream.url, tmp_path, routers=routers)) as gw:
        raw = ask(gw, model="gearshift/coin")
    route = one(receiver.wait(3), "route gearshift/coin")
    score, threshold = route.attributes["gearshift.route.score"], route.attributes["gearshift.route.threshold"]
    assert 0 <= score <= 1 and 0 < threshold < 1
    assert raw.headers["x-gearshift-model"] == ("large" if score >= threshold else "small")
    assert f"threshold {threshold:.3f}" in route.attributes["gearshift.route.reason"]
