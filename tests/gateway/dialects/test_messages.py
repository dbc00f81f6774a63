"""`/v1/messages`: the official anthropic client and raw HTTP -> gearshift -> fake OpenAI and Anthropic upstreams."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
import urllib3

from gearshift.gateway.dialects.messages import to_chat
from gearshift.gateway.server import running
from gearshift.providers.anthropic import to_anthropic
from gearshift.request import ChatRequest
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config, stored_traces

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}


@pytest.fixture
def gateway(upstream: FakeUpstream, upstream_key: None, tmp_path: Path) -> Iterator[Any]:
    with running(gateway_config(upstream.url, tmp_path)) as gw:
        yield gw


def client(gw: Any, key: str = "none") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


def sse(gw: Any, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a raw streamed answer, in order (pings and comments included as seen)."""
    resp = urllib3.request("POST", gw.url + "/v1/messages", body=json.dumps({**body, "stream": True}),
                           headers={"Content-Type": "application/json", **(headers or {})})
    assert resp.status == 200, resp.data
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    out = []
    for frame in resp.data.decode().split("\n\n"):
        lines = [line for line in frame.split("\n") if line and not line.startswith(":")]
        if lines:
            event = lines[0].removeprefix("event: ")
            data = json.loads(lines[1].removeprefix("data: "))
            assert data["type"] == event
            out.append((event, data))
    return out


# ---------------------------------------------------------------- translation


def test_messages_to_anthropic_round_trips_every_field() -> None:
    """Messages -> internal -> Anthropic is the client's body again: what an Anthropic upstream receives."""
    body = {
        "model": "claude-x", "max_tokens": 300, "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"query": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"query": "Oslo"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [
                    {"type": "text", "text": "map:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
                {"type": "text", "text": "Compare them."}]},
        ],
        "tools": [WEATHER], "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["END", "\n\nHuman:"], "metadata": {"user_id": "user-7"},
        "temperature": 0.2, "top_p": 0.9, "top_k": 40, "stream": True,
    }
    assert to_anthropic(to_chat(body), "claude-x") == body
    for choice in ({"type": "auto"}, {"type": "none"}, {"type": "tool", "name": "get_weather"}):
        assert to_anthropic(to_chat({**body, "tool_choice": choice}), "claude-x")["tool_choice"] == choice


def test_internal_form_is_openai_chat() -> None:
    chat = to_chat({"model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "sys"}],
                    "metadata": {"user_id": "u", "tier": "pro"},
                    "messages": [{"role": "user", "content": "hi"}]})
    assert chat["messages"] == [{"role": "system", "content": [{"type": "text", "text": "sys"}]},
                                {"role": "user", "content": "hi"}]
    # user_id is OpenAI's `user`; other metadata keys are gearshift's routing hints, as in chat.
    assert chat["user"] == "u" and chat["metadata"] == {"tier": "pro"}
    assert ChatRequest.from_http(chat).metadata == {"tier": "pro"}


# ---------------------------------------------------------------- the anthropic SDK


def test_create_routes_like_chat_and_answers_a_message(gateway: Any, upstream: FakeUpstream) -> None:
    raw = client(gateway).messages.with_raw_response.create(
        model="gearshift/auto", max_tokens=100, system="Answer briefly.",
        messages=[{"role": "user", "content": "hello there"}], metadata={"user_id": "u-1"}, stop_sequences=["zzz"])
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant" and msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == "echo: hello there"  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn" and msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert raw.headers["x-gearshift-model"] == "small" and raw.headers["x-gearshift-router"] == "gearshift/auto"
    sent = upstream.requests[-1]
    assert sent.path == "/v1/chat/completions" and sent.json["model"] == "fake-small"
    assert sent.json["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert sent.json["user"] == "u-1" and sent.json["stop"] == ["zzz"] and sent.json["max_tokens"] == 100
    [t] = stored_traces(gateway, 1)
    assert t["endpoint"] == "messages" and t["final_model"] == "small" and t["status"] == 200
    cost = (msg.usage.input_tokens * 1.0 + msg.usage.output_tokens * 2.0) / 1e6
    assert t["cost_usd"] == pytest.approx(cost) and float(raw.headers["x-gearshift-cost-usd"]) == pytest.approx(cost)


def test_anthropic_upstream_receives_the_clients_own_body(gateway: Any, upstream: FakeUpstream) -> None:
    """A pass-through: what the translation cannot carry (prompt caching, unknown fields) still arrives."""
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    content = [{"type": "text", "text": "describe", "cache_control": {"type": "ephemeral"}},
               {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]
    msg = client(gateway).messages.create(
        model="claude", max_tokens=64, system=system, metadata={"user_id": "u-9"},  # type: ignore[arg-type]
        messages=[{"role": "user", "content": content}],  # type: ignore[typeddict-item]
        extra_headers={"anthropic-version": "2023-06-01", "x-gearshift-tier": "pro"},
        extra_body={"service_tier": "auto"})
    assert msg.content[0].text == "echo: describe"  # type: ignore[union-attr]
    sent = upstream.requests[-1]
    assert sent.path == "/v1/messages" and sent.headers["anthropic-version"]
    assert sent.json == {"model": "fake-claude", "max_tokens": 64, "system": system, "metadata": {"user_id": "u-9"},
                         "messages": [{"role": "user", "content": content}], "service_tier": "auto"}
    # Streamed too, and routing hints in metadata stay in gearshift.
    with client(gateway).messages.stream(model="claude", max_tokens=64, metadata={"user_id": "u-9", "tier": "pro"},  # type: ignore[typeddict-unknown-key]
                                         messages=[{"role": "user", "content": content}]) as stream:  # type: ignore[typeddict-item]
        assert stream.get_final_text() == "echo: describe"
    assert upstream.requests[-1].json == {"model": "fake-claude", "max_tokens": 64, "stream": True,
                                          "metadata": {"user_id": "u-9"},
                                          "messages": [{"role": "user", "content": content}]}


@pytest.mark.parametrize("model", ["gearshift/auto", "claude"])
def test_tool_use_round_trip(gateway: Any, model: str) -> None:
    c = client(gateway)
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    first = c.messages.create(model=model, max_tokens=200, tools=[WEATHER], tool_choice={"type": "any"},  # type: ignore[list-item]
                              messages=messages)
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"query": "weather in Paris?"} and call.id
    messages += [{"role": "assistant", "content": first.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"}]}]
    second = c.messages.create(model=model, max_tokens=200, tools=[WEATHER], messages=messages)  # type: ignore[list-item]
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "echo: tool result: sunny, 21C"  # type: ignore[union-attr]


@pytest.mark.parametrize("model", ["gearshift/auto", "claude"])
def test_stop_sequences_and_max_tokens(gateway: Any, model: str) -> None:
    c = client(gateway)
    msg = c.messages.create(model=model, max_tokens=100, stop_sequences=["STOP"],
                            messages=[{"role": "user", "content": "one two STOP three"}])
    assert msg.content[0].text == "echo: one two "  # type: ignore[union-attr]
    # Claude names the sequence; an OpenAI-compatible upstream does not say which one matched.
    assert (msg.stop_reason, msg.stop_sequence) == (("stop_sequence", "STOP") if model == "claude" else ("end_turn", None))
    with c.messages.stream(model=model, max_tokens=100, stop_sequences=["STOP"],
                           messages=[{"role": "user", "content": "one two STOP three"}]) as s:
        final = s.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == (msg.stop_reason, msg.stop_sequence)
    short = c.messages.create(model=model, max_tokens=2, messages=[{"role": "user", "content": "a long answer please"}])
    assert short.stop_reason == "max_tokens"


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_comes_back_signed_so_the_tool_loop_continues(gateway: Any, upstream: FakeUpstream,
                                                               stream: bool) -> None:
    """Claude refuses a tool result whose tool-use turn lost its thinking: the client must get it back."""
    c = client(gateway)
    kw: dict[str, Any] = {"model": "claude", "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1024},
                          "tools": [WEATHER], "tool_choice": {"type": "any"}}
    messages: list[Any] = [{"role": "user", "content": "weather in Lima?"}]
    if stream:
        with c.messages.stream(messages=messages, **kw) as s:
            first = s.get_final_message()
    else:
        first = c.messages.create(messages=messages, **kw)
    assert [b.type for b in first.content] == ["thinking", "text", "tool_use"]
    assert first.content[0].thinking == "Let me think." and first.content[0].signature == "sig-fake"  # type: ignore[union-attr]
    messages += [{"role": "assistant", "content": first.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[2].id,  # type: ignore[union-attr]
                                               "content": "cloudy"}]}]
    second = c.messages.create(messages=messages, **{**kw, "tool_choice": {"type": "auto"}})
    assert second.content[-1].text == "echo: tool result: cloudy"  # type: ignore[union-attr]
    assert upstream.requests[-1].json["messages"][1]["content"][0] == {
        "type": "thinking", "thinking": "Let me think.", "signature": "sig-fake"}


@pytest.mark.parametrize("model", ["gearshift/auto", "claude"])
def test_stream_text(gateway: Any, model: str) -> None:
    with client(gateway).messages.stream(model=model, max_tokens=100,
                                         messages=[{"role": "user", "content": "stream me some words"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream me some words"
    assert final.content[0].text == text and final.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    [t] = stored_traces(gateway, 1)
    assert t["endpoint"] == "messages" and t["streamed"] and t["cost_usd"] > 0


def test_stream_tool_use(gateway: Any) -> None:
    with client(gateway).messages.stream(model="gearshift/auto", max_tokens=100, tools=[WEATHER],  # type: ignore[list-item]
                                         tool_choice={"type": "tool", "name": "get_weather"},
                                         messages=[{"role": "user", "content": "Oslo"}]) as stream:
        final = stream.get_final_message()
    [call] = [b for b in final.content if b.type == "tool_use"]
    assert call.input == {"query": "Oslo"} and final.stop_reason == "tool_use"


def test_count_tokens_is_gearshifts_estimate(gateway: Any) -> None:
    messages: list[Any] = [{"role": "user", "content": "count these words please " * 10}]
    got = client(gateway).messages.count_tokens(model="claude", system="sys", messages=messages)
    expected = ChatRequest(body=to_chat({"model": "claude", "system": "sys", "messages": messages},
                                        require_max_tokens=False)).estimated_tokens()
    assert got.input_tokens == expected > 60


# ---------------------------------------------------------------- errors and keys


def test_errors_in_anthropic_shape(gateway: Any, upstream: FakeUpstream) -> None:
    c = client(gateway)
    with pytest.raises(anthropic.NotFoundError) as nf:
        c.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert nf.value.body["type"] == "error" and nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    resp = urllib3.request("POST", gateway.url + "/v1/messages",
                           body=json.dumps({"model": "claude", "messages": [{"role": "user", "content": "x"}]}))
    assert resp.status == 400
    assert json.loads(resp.data) == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "`max_tokens` is required: a positive integer"}}
    upstream.fail(529, times=None, model="fake-claude")
    with pytest.raises(anthropic.APIStatusError) as up:
        c.messages.create(model="claude", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert up.value.body["type"] == "error" and up.value.body["error"]["type"] in ("overloaded_error", "api_error")  # type: ignore[index]


def test_stream_error_is_an_error_event(gateway: Any, upstream: FakeUpstream) -> None:
    upstream.error_event(after=5, model="fake-claude")  # after some text: too late to fall back
    events = sse(gateway, {"model": "claude", "max_tokens": 50,
                           "messages": [{"role": "user", "content": "one two three four five"}]})
    kinds = [e for e, _ in events]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"] and kinds[-1] == "error"
    assert "message_stop" not in kinds
    assert events[-1][1]["error"]["type"] == "overloaded_error"


def test_keys_by_x_api_key_or_bearer(upstream: FakeUpstream, upstream_key: None, tmp_path: Path) -> None:
    config = gateway_config(upstream.url, tmp_path, client_keys=[{"name": "app", "key": "k-1"}])
    with running(config) as gw:
        assert client(gw, "k-1").messages.create(model="gearshift/auto", max_tokens=10,
                                                 messages=[{"role": "user", "content": "hi"}]).content
        bearer = anthropic.Anthropic(base_url=gw.url, auth_token="k-1", max_retries=0)
        assert bearer.messages.create(model="gearshift/auto", max_tokens=10,
                                      messages=[{"role": "user", "content": "hi"}]).content
        with pytest.raises(anthropic.AuthenticationError) as bad:
            client(gw, "wrong").messages.create(model="gearshift/auto", max_tokens=10,
                                                messages=[{"role": "user", "content": "hi"}])
        assert bad.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        assert "x-api-key" in bad.value.body["error"]["message"]  # type: ignore[index]
        with pytest.raises(anthropic.AuthenticationError):
            client(gw, "wrong").messages.count_tokens(model="claude", messages=[{"role": "user", "content": "hi"}])
        traces = stored_traces(gw, 2)
    assert [t["client"] for t in traces] == ["app", "app"]  # the refused requests left no trace


# ---------------------------------------------------------------- raw SSE against the published sequence


def test_stream_event_sequence_text(gateway: Any) -> None:
    events = sse(gateway, {"model": "gearshift/auto", "max_tokens": 50,
                           "messages": [{"role": "user", "content": "a b c"}]},
                 headers={"x-api-key": "none", "anthropic-version": "2023-06-01"})
    kinds = [e for e, _ in events]
    deltas = kinds.count("content_block_delta")
    assert kinds == ["message_start", "content_block_start", "ping", *["content_block_delta"] * deltas,
                     "content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta") == "echo: a b c"
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 0


def test_stream_event_sequence_tool_use(gateway: Any) -> None:
    events = sse(gateway, {"model": "gearshift/auto", "max_tokens": 50, "tools": [WEATHER],
                           "tool_choice": {"type": "any"}, "messages": [{"role": "user", "content": "Rome"}]})
    kinds = [e for e, _ in events]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    block = events[1][1]["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "get_weather" and block["input"] == {}
    parts = [d["delta"] for e, d in events if e == "content_block_delta"]
    assert all(p["type"] == "input_json_delta" for p in parts)
    assert json.loads("".join(p["partial_json"] for p in parts)) == {"query": "Rome"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


# ---------------------------------------------------------------- shadow and metrics, as for chat


def test_shadow_pairs_are_scored_and_metrics_count(upstream: FakeUpstream, upstream_key: None, tmp_path: Path) -> None:
    upstream.reply("Work... #### 42", model="fake-large")  # reference and answer mark the same final number
    upstream.reply("So the answer is 42.", model="fake-small")
    routers = {"gearshift/auto": {"kind": "rules", "default": "small", "rules": [], "shadow": {"rate": 1.0}}}
    with running(gateway_config(upstream.url, tmp_path, routers=routers)) as gw:
        msg = client(gw).messages.create(model="gearshift/auto", max_tokens=50,
                                         messages=[{"role": "user", "content": "six times seven is 42"}])
        assert msg.content[0].text == "So the answer is 42."  # type: ignore[union-attr]
        assert stored_traces(gw, 1)[0]["endpoint"] == "messages"
        deadline = time.monotonic() + 20
        while gw.gateway.shadower.done < 1 or gw.gateway.writer.updated < 1:  # the pair is written onto the trace
            assert time.monotonic() < deadline, "the shadow pair was not stored"
            time.sleep(0.02)
        metrics = urllib3.request("GET", gw.url + "/metrics").data.decode()
        [t] = list(gw.gateway.store.traces())
    assert t["shadowed"] and [c["role"] for c in t["calls"]] == ["primary", "shadow"]
    [verdict] = [v for v in t["verdicts"] if v["gate"] == "shadow_agreement"]
    assert verdict["passed"] and verdict["method"] == "final_answer"
    assert 'gearshift_requests_total{router="gearshift/auto"' in metrics
