"""Provider adapters against a real fake upstream on 127.0.0.1: answers, streams, usage, errors."""

from __future__ import annotations

import asyncio
import csv
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pytest
from orjson import loads as orjson_loads

from gearshift.config import ModelConfig, Price, ReplaySource, Timeouts
from gearshift.errors import ReplayMiss, UpstreamError
from gearshift.outcomes.table import Outcomes
from gearshift.providers import (
    PROVIDERS,
    AnthropicProvider,
    OpenAICompatProvider,
    ReplayProvider,
    build_provider,
)
from gearshift.providers.anthropic import JSON_TOOL, Params, TranslationError, from_anthropic, to_anthropic
from gearshift.providers.base import Provider, estimate_tokens
from gearshift.providers.recorded import split_words
from gearshift.request import ChatRequest
from tests.support.fake_upstream import FakeUpstream, fake_tokens

KEY = "sk-test-SECRET-0123456789abcdef"
KEY_ENV = "GEARSHIFT_TEST_UPSTREAM_KEY"
T = TypeVar("T")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.running(api_key=KEY) as up:
        yield up


@pytest.fixture
def up(fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> FakeUpstream:
    fake.clear()
    monkeypatch.setenv(KEY_ENV, KEY)
    return fake


def model(kind: str, base_url: str = "", *, read: float = 10.0, name: str = "m", upstream_id: str = "fake-small",
          **kw: Any) -> ModelConfig:
    return ModelConfig(name=name, provider=kind, upstream_id=upstream_id, base_url=base_url, api_key_env=KEY_ENV,
                       price=Price(input=1, output=2), timeout=Timeouts(connect=2, read=read), **kw)


def run(cfg: ModelConfig, fn: Callable[[Provider], Awaitable[T]]) -> T:
    """Build the provider on a pooled session (as the gateway does), run `fn`, clean up."""

    async def main() -> T:
        async with aiohttp.ClientSession() as session:
            provider = build_provider(cfg, session)
            try:
                return await fn(provider)
            finally:
                await provider.close()

    return asyncio.run(main())


def req(text: str = "hello there", **body: Any) -> ChatRequest:
    return ChatRequest.from_http({"model": "router", "messages": [{"role": "user", "content": text}], **body})


async def collect(provider: Provider, request: ChatRequest) -> tuple[list[dict[str, Any]], Any]:
    s = provider.stream(request)
    await s.start()
    chunks = [c async for c in s]
    return chunks, s


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))


def expect_error(cfg: ModelConfig, fn: Callable[[Provider], Awaitable[Any]]) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        run(cfg, fn)
    err = info.value
    assert KEY not in str(err) and KEY not in err.message and KEY not in str(err.to_json())
    assert "Bearer" not in err.message
    return err


def complete(request: ChatRequest | None = None) -> Callable[[Provider], Awaitable[Any]]:
    return lambda p: p.complete(request or req())


def stream_all(request: ChatRequest | None = None) -> Callable[[Provider], Awaitable[Any]]:
    return lambda p: collect(p, request or req(stream=True))


# ---------------------------------------------------------------------------------- registry


def test_build_provider_picks_the_adapter_by_kind() -> None:
    assert {"openai": OpenAICompatProvider, "anthropic": AnthropicProvider, "replay": ReplayProvider} == PROVIDERS
    assert isinstance(build_provider(model("openai", "http://127.0.0.1:1/v1"), None), OpenAICompatProvider)
    assert isinstance(build_provider(model("anthropic", "http://127.0.0.1:1"), None), AnthropicProvider)
    replay = model("replay", replay=ReplaySource(dataset="routellm/gsm8k", column="gpt-4-1106-preview"))
    assert isinstance(build_provider(replay, None, "."), ReplayProvider)  # loading waits for the first request


# ---------------------------------------------------------------------------------- OpenAI-compatible


def test_openai_complete_forwards_body_and_reports_upstream_usage(up: FakeUpstream) -> None:
    cfg = model("openai", up.openai_url, headers={"X-Org": "acme"})
    request = req("what is 2+2?", temperature=0.2, my_vendor_field={"beam": 3}, logit_bias={"50256": -100})
    c = run(cfg, complete(request))
    assert c.text == "echo: what is 2+2?"
    assert c.body["choices"][0]["finish_reason"] == "stop"
    assert (c.usage.input_tokens, c.usage.output_tokens, c.usage.estimated) == \
        (fake_tokens("what is 2+2?") + 4, fake_tokens("echo: what is 2+2?"), False)
    got = up.requests[-1]
    assert got.path == "/v1/chat/completions"
    assert got.json["model"] == "fake-small"  # the upstream id replaces the client's router name
    assert got.json["my_vendor_field"] == {"beam": 3} and got.json["logit_bias"] == {"50256": -100}
    assert got.json["temperature"] == 0.2 and "stream_options" not in got.json
    assert got.headers["authorization"] == f"Bearer {KEY}" and got.headers["x-org"] == "acme"
    assert request.body["model"] == "router"  # the client's body is not mutated


def test_openai_complete_of_a_streamed_request_asks_for_a_whole_answer(up: FakeUpstream) -> None:
    c = run(model("openai", up.openai_url), complete(req(stream=True, stream_options={"include_usage": True})))
    assert c.text == "echo: hello there"
    assert up.requests[-1].json["stream"] is False and "stream_options" not in up.requests[-1].json


def test_openai_usage_is_estimated_when_the_upstream_reports_none(up: FakeUpstream) -> None:
    up.reply("forty two, as always", usage=False, times=2)
    request = req("question?")
    c = run(model("openai", up.openai_url), complete(request))
    assert "usage" not in c.body
    assert c.usage.estimated is True
    assert (c.usage.input_tokens, c.usage.output_tokens) == (request.estimated_tokens(),
                                                             estimate_tokens("forty two, as always"))
    chunks, s = run(model("openai", up.openai_url), stream_all(req("question?", stream=True)))
    assert s.text == "forty two, as always" and s.usage.estimated is True
    assert s.usage.output_tokens == estimate_tokens("forty two, as always")


def test_openai_stream_yields_chunks_and_keeps_usage_the_client_did_not_ask_for(up: FakeUpstream) -> None:
    request = req("stream me please", stream=True, custom_knob=7)
    chunks, s = run(model("openai", up.openai_url), stream_all(request))
    assert content_of(chunks) == s.text == "echo: stream me please"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"] for c in chunks), "the usage-only chunk is hidden from a client that did not ask"
    assert (s.usage.input_tokens, s.usage.output_tokens, s.usage.estimated) == \
        (fake_tokens("stream me please") + 4, fake_tokens("echo: stream me please"), False)
    sent = up.requests[-1].json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["custom_knob"] == 7
    assert "stream_options" not in request.body


def test_openai_stream_passes_the_usage_chunk_when_the_client_asked(up: FakeUpstream) -> None:
    request = req("count me", stream=True, stream_options={"include_usage": True})
    chunks, s = run(model("openai", up.openai_url), stream_all(request))
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == s.usage.output_tokens == fake_tokens("echo: count me")


@pytest.mark.parametrize(("status", "client_status"), [(500, 502), (503, 502), (429, 429)])
def test_openai_server_errors_and_rate_limits_are_retryable(up: FakeUpstream, status: int, client_status: int) -> None:
    up.fail(status, message="upstream is sad")
    err = expect_error(model("openai", up.openai_url, name="cheap"), complete())
    assert err.retryable is True and err.status == client_status and err.upstream_status == status
    assert "cheap" in err.message and "upstream is sad" in err.message


def test_openai_validation_error_passes_through_with_the_upstream_message(up: FakeUpstream) -> None:
    up.fail(400, message="temperature must be at most 2", error_type="invalid_request_error")
    err = expect_error(model("openai", up.openai_url, name="cheap"), complete())
    assert err.retryable is False and err.status == 400 and err.upstream_status == 400
    assert "temperature must be at most 2" in err.message and "cheap" in err.message
    assert err.to_json()["error"]["type"] == "invalid_request_error"


def test_openai_rejected_key_becomes_502_without_echoing_the_key(up: FakeUpstream,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "sk-wrong-key-do-not-print-42"
    monkeypatch.setenv(KEY_ENV, wrong)
    with pytest.raises(UpstreamError) as info:
        run(model("openai", up.openai_url, name="cheap"), complete())
    err = info.value
    assert up.requests[-1].headers["authorization"] == f"Bearer {wrong}"  # the fake echoed it in its 401 body
    assert wrong not in str(err) and wrong not in str(err.to_json())
    assert err.status == 502 and err.upstream_status == 401 and err.retryable is False
    assert "credentials" in err.message and "cheap" in err.message


def test_openai_connection_reset_is_retryable(up: FakeUpstream) -> None:
    up.reset()
    err = expect_error(model("openai", up.openai_url), complete())
    assert err.retryable is True and err.status == 502 and not err.timeout


def test_openai_read_timeout_is_a_retryable_504(up: FakeUpstream) -> None:
    up.delay(5.0)
    err = expect_error(model("openai", up.openai_url, read=0.3, name="slow"), complete())
    assert err.timeout is True and err.status == 504 and err.retryable is True
    assert "slow" in err.message and "timed out" in err.message


def test_openai_refused_connection_is_retryable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = expect_error(model("openai", f"http://127.0.0.1:{port}/v1", name="gone"), complete())
    assert err.retryable is True and err.status == 502 and "gone" in err.message


def test_openai_stream_errors_before_the_first_token_raise_from_start(up: FakeUpstream) -> None:
    cfg = model("openai", up.openai_url)
    up.fail(500)
    assert expect_error(cfg, stream_all()).retryable is True
    up.drop(after=0)  # headers and the role chunk, then the connection dies: still no answer
    err = expect_error(cfg, lambda p: p.stream(req(stream=True)).start())
    assert err.retryable is True
    up.error_event(after=0, error_type="server_error", message="model crashed")
    err = expect_error(cfg, lambda p: p.stream(req(stream=True)).start())
    assert err.retryable is True and "model crashed" in err.message


def test_openai_stream_dropped_mid_answer_raises_while_iterating(up: FakeUpstream) -> None:
    up.drop(after=2)

    async def go(p: Provider) -> tuple[list[dict[str, Any]], UpstreamError]:
        s = p.stream(req("one two three four five", stream=True))
        await s.start()  # the first tokens arrived: the gateway has committed to this model
        got: list[dict[str, Any]] = []
        with pytest.raises(UpstreamError) as info:
            async for c in s:
                got.append(c)
        return got, info.value

    got, err = run(model("openai", up.openai_url), go)
    assert content_of(got) == "echo: one " and err.retryable is True and KEY not in str(err)


def test_openai_stream_stall_longer_than_read_timeout_times_out(up: FakeUpstream) -> None:
    up.stall(5.0, after=1)

    async def go(p: Provider) -> UpstreamError:
        s = p.stream(req(stream=True))
        await s.start()
        with pytest.raises(UpstreamError) as info:
            async for _ in s:
                pass
        return info.value

    err = run(model("openai", up.openai_url, read=0.3), go)
    assert err.timeout is True and err.status == 504


def test_openai_stream_closed_early_frees_the_connection(up: FakeUpstream) -> None:
    async def go(p: Provider) -> str:
        s = p.stream(req("a b c d e f", stream=True))
        await s.start()
        async for _ in s:
            break  # the client went away
        await s.aclose()
        return (await p.complete(req("again"))).text

    assert run(model("openai", up.openai_url), go) == "echo: again"


# ---------------------------------------------------------------------------------- Anthropic translation


def test_to_anthropic_translates_roles_system_content_and_parameters() -> None:
    body = {
        "model": "router", "temperature": 1.7, "top_p": 0.9, "stop": ["\n\nHuman:", " "], "user": "u-42",
        "max_completion_tokens": 300, "max_tokens": 50, "logit_bias": {"1": 2}, "stream": True,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "second"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                                         {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "third"},
        ],
    }
    params = Params("claude-x", drop=True)  # drop_params: true; without it each loss is a 400 (test_params.py)
    out = to_anthropic(body, "claude-x", params=params)
    assert params.dropped == ["logit_bias", "temperature", "stop"]
    assert out["model"] == "claude-x" and out["system"] == "You are terse.\n\nAnswer in French."
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "first"}, {"type": "text", "text": "second"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}}]
    assert out["max_tokens"] == 300 and out["temperature"] == 1.0 and out["top_p"] == 0.9
    assert out["stop_sequences"] == ["\n\nHuman:"]  # whitespace-only stops are refused by Anthropic
    assert out["metadata"] == {"user_id": "u-42"} and out["stream"] is True
    assert "logit_bias" not in out and "stop" not in out
    assert to_anthropic({"messages": [{"role": "user", "content": "x"}]}, "c")["max_tokens"] == 4096
    with pytest.raises(UpstreamError, match="`n` must be 1") as info:  # one choice per request only
        to_anthropic({"n": 2, "messages": [{"role": "user", "content": "x"}]}, "c", "claude")
    assert info.value.status == 400 and info.value.retryable is False and info.value.param == "n"


def test_to_anthropic_translates_tools_tool_calls_and_tool_results() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Rome"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "current weather",
                                                    "parameters": {"type": "object", "properties": {
                                                        "city": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": False,
    }
    out = to_anthropic(body, "c")
    assert out["tools"] == [{"name": "weather", "description": "current weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}}}]
    assert out["tool_choice"] == {"type": "tool", "name": "weather", "disable_parallel_tool_use": True}
    assert out["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}}]}
    assert out["messages"][2] == {"role": "user", "content": [  # both results merged into one user turn
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "21C"}]}
    for choice, expected in (("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})):
        assert to_anthropic({**body, "tool_choice": choice, "parallel_tool_calls": None}, "c")["tool_choice"] == expected


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter")])
def test_from_anthropic_maps_stop_reasons(stop_reason: str, finish: str) -> None:
    doc = {"id": "msg_1", "model": "claude-x", "content": [{"type": "text", "text": "hi"}],
           "stop_reason": stop_reason, "usage": {"input_tokens": 10, "output_tokens": 3}}
    out = from_anthropic(doc, created=123)
    assert out["choices"][0]["finish_reason"] == finish
    assert (out["id"], out["model"], out["created"], out["object"]) == ("msg_1", "claude-x", 123, "chat.completion")


def test_from_anthropic_maps_tool_use_and_usage_with_cache() -> None:
    doc = {"id": "msg_2", "model": "claude-x", "stop_reason": "tool_use",
           "content": [{"type": "text", "text": "Checking."},
                       {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}],
           "usage": {"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 100,
                     "cache_creation_input_tokens": 5}}
    out = from_anthropic(doc)
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Checking."
    assert msg["tool_calls"] == [{"id": "toolu_1", "type": "function",
                                  "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}]
    assert out["usage"] == {"prompt_tokens": 115, "completion_tokens": 7, "total_tokens": 122,
                            "prompt_tokens_details": {"cached_tokens": 100}}


# ---------------------------------------------------------------------------------- Anthropic over HTTP


def conversation(**body: Any) -> ChatRequest:
    return ChatRequest.from_http({"model": "router", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "how are you"}], **body})


def test_anthropic_complete_sends_messages_api_and_translates_back(up: FakeUpstream) -> None:
    c = run(model("anthropic", up.anthropic_url, upstream_id="claude-fake", name="claude"), complete(conversation()))
    got = up.requests[-1]
    assert got.path == "/v1/messages"
    assert got.headers["x-api-key"] == KEY and got.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in got.headers
    assert got.json["system"] == "Be brief." and got.json["max_tokens"] == 4096
    assert got.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                                 {"type": "text", "text": "how are you"}]}]
    assert c.text == "echo: hi\nhow are you"
    assert c.body["object"] == "chat.completion" and c.body["model"] == "claude-fake"
    assert c.body["id"].startswith("msg_") and c.body["choices"][0]["finish_reason"] == "stop"
    prompt = fake_tokens("Be brief.") + fake_tokens("hi\nhow are you") + 4
    assert (c.usage.input_tokens, c.usage.output_tokens, c.usage.estimated) == \
        (prompt, fake_tokens(c.text), False)
    assert c.body["usage"]["total_tokens"] == prompt + c.usage.output_tokens


def test_anthropic_length_and_stop_sequence_finish_reasons(up: FakeUpstream) -> None:
    cfg = model("anthropic", up.anthropic_url)
    c = run(cfg, complete(req("a very long question that goes on and on", max_tokens=3)))
    assert c.body["choices"][0]["finish_reason"] == "length" and up.requests[-1].json["max_tokens"] == 3
    c = run(cfg, complete(req("alpha STOP beta", stop="STOP")))
    assert c.text == "echo: alpha " and c.body["choices"][0]["finish_reason"] == "stop"


def test_anthropic_tool_call_round_trip(up: FakeUpstream) -> None:
    cfg = model("anthropic", up.anthropic_url)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"query": {"type": "string"}}}}}]
    first = run(cfg, complete(req("find gearshift", tools=tools, tool_choice="required")))
    msg = first.body["choices"][0]["message"]
    assert first.body["choices"][0]["finish_reason"] == "tool_calls"
    call = msg["tool_calls"][0]
    assert call["function"]["name"] == "lookup" and call["type"] == "function"
    assert call["function"]["arguments"] == '{"query":"find gearshift"}'
    follow = ChatRequest.from_http({"model": "r", "tools": tools, "messages": [
        {"role": "user", "content": "find gearshift"}, msg,
        {"role": "tool", "tool_call_id": call["id"], "content": "an LLM router"}]})
    second = run(cfg, complete(follow))
    assert second.text == "echo: tool result: an LLM router"
    sent = up.requests[-1].json["messages"]
    assert sent[1]["content"][-1] == {"type": "tool_use", "id": call["id"], "name": "lookup",
                                      "input": {"query": "find gearshift"}}
    assert sent[2]["content"] == [{"type": "tool_result", "tool_use_id": call["id"], "content": "an LLM router"}]


def test_anthropic_stream_events_become_openai_chunks(up: FakeUpstream) -> None:
    cfg = model("anthropic", up.anthropic_url)
    chunks, s = run(cfg, stream_all(conversation(stream=True)))
    assert up.requests[-1].json["stream"] is True
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" and c["id"].startswith("msg_") for c in chunks)
    assert content_of(chunks) == s.text == "echo: hi\nhow are you"
    assert [c["choices"][0]["finish_reason"] for c in chunks].count("stop") == 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"  # no usage chunk: the client did not ask
    assert (s.usage.output_tokens, s.usage.estimated) == (fake_tokens(s.text), False)
    chunks, s = run(cfg, stream_all(conversation(stream=True, stream_options={"include_usage": True})))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == s.usage.output_tokens
    assert chunks[-1]["usage"]["prompt_tokens"] == s.usage.input_tokens > 0


def test_anthropic_stream_tool_call_deltas(up: FakeUpstream) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    request = req("route me", stream=True, tools=tools, tool_choice={"type": "function", "function": {"name": "lookup"}})
    chunks, s = run(model("anthropic", up.anthropic_url), stream_all(request))
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["id"].startswith("toolu_") and calls[0]["function"]["name"] == "lookup"
    assert all(tc["index"] == 0 for tc in calls)
    assert "".join(tc["function"]["arguments"] for tc in calls) == '{"query":"route me"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert s.text == "calling lookup"


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"]}


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "trip", "schema": schema, "strict": True}}


def test_to_anthropic_asks_for_response_format_json_by_a_forced_tool_or_the_system_prompt() -> None:
    out = to_anthropic({"messages": [{"role": "user", "content": "plan"}], "response_format": json_schema(SCHEMA)},
                       "claude-x")
    assert out["tools"] == [{"name": JSON_TOOL, "input_schema": SCHEMA, "description": "Give the answer as this JSON."}]
    assert out["tool_choice"] == {"type": "tool", "name": JSON_TOOL} and "system" not in out
    out = to_anthropic({"messages": [{"role": "user", "content": "plan"}], "response_format": {"type": "json_object"}},
                       "claude-x")
    assert out["tools"][0]["input_schema"] == {"type": "object"}
    # A schema that is not an object travels wrapped: tool inputs must be objects.
    out = to_anthropic({"messages": [{"role": "user", "content": "x"}],
                        "response_format": json_schema({"type": "array", "items": {"type": "integer"}})}, "c")
    assert out["tools"][0]["input_schema"]["properties"]["value"] == {"type": "array", "items": {"type": "integer"}}
    # With tools of the client's own, or thinking, the schema goes into the system prompt.
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    out = to_anthropic({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x"}],
                        "tools": tools, "response_format": json_schema(SCHEMA)}, "c")
    assert [t["name"] for t in out["tools"]] == ["lookup"] and "tool_choice" not in out
    assert out["system"].startswith("Be brief.\n\n") and '"required":["city","days"]' in out["system"]
    out = to_anthropic({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"},
                        "thinking": {"type": "enabled", "budget_tokens": 2048}}, "c")
    assert "tools" not in out and "one JSON object only" in out["system"]
    assert "tools" not in to_anthropic({"messages": [], "response_format": {"type": "text"}}, "c")
    with pytest.raises(TranslationError, match="response_format type 'xml' is not one of"):
        to_anthropic({"messages": [], "response_format": {"type": "xml"}}, "c", "claude")


def test_anthropic_response_format_answer_is_json_content(up: FakeUpstream) -> None:
    cfg = model("anthropic", up.anthropic_url)
    up.reply('{"city": "Lyon", "days": 3}')
    c = run(cfg, complete(req("plan a trip", response_format=json_schema(SCHEMA))))
    msg = c.body["choices"][0]["message"]
    assert orjson_loads(msg["content"]) == {"city": "Lyon", "days": 3} and "tool_calls" not in msg
    assert c.body["choices"][0]["finish_reason"] == "stop" and c.text == msg["content"]
    assert up.requests[-1].json["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    # Streamed: the tool input's deltas are the content; the fake's text before the tool is held back.
    up.reply('{"city": "Oslo", "days": 2}')
    chunks, s = run(cfg, stream_all(req("plan a trip", stream=True, response_format=json_schema(SCHEMA))))
    assert orjson_loads(content_of(chunks)) == {"city": "Oslo", "days": 2} == orjson_loads(s.text)
    assert not any(c["choices"][0]["delta"].get("tool_calls") for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_anthropic_response_format_with_a_wrapped_schema_unwraps_the_value(up: FakeUpstream) -> None:
    cfg = model("anthropic", up.anthropic_url)
    fmt = json_schema({"type": "array", "items": {"type": "integer"}})
    up.reply('{"value": [1, 2, 3]}')
    c = run(cfg, complete(req("three numbers", response_format=fmt)))
    assert orjson_loads(c.text) == [1, 2, 3]
    up.reply('{"value": [4, 5]}')
    chunks, s = run(cfg, stream_all(req("two numbers", stream=True, response_format=fmt)))
    assert orjson_loads(content_of(chunks)) == [4, 5] and chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_anthropic_errors_map_to_retryable_or_not(up: FakeUpstream) -> None:
    cfg = model("anthropic", up.anthropic_url, name="claude")
    up.fail(529, error_type="overloaded_error", message="Overloaded")
    err = expect_error(cfg, complete())
    assert err.retryable is True and err.upstream_status == 529 and "Overloaded" in err.message
    up.fail(400, message="messages.0.content: bad block")
    err = expect_error(cfg, complete())
    assert err.retryable is False and err.status == 400 and "bad block" in err.message
    up.fail(429)
    assert expect_error(cfg, stream_all(req(stream=True))).status == 429


def test_anthropic_overloaded_event_in_the_stream_raises_from_start(up: FakeUpstream) -> None:
    up.error_event(after=0, error_type="overloaded_error", message="Overloaded")
    err = expect_error(model("anthropic", up.anthropic_url), lambda p: p.stream(req(stream=True)).start())
    assert err.retryable is True and "Overloaded" in err.message


def test_anthropic_rejected_key_and_api_validation(up: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = model("anthropic", up.anthropic_url, name="claude")
    # A real Messages API check: a conversation must start with a user turn; the error passes through.
    bad = ChatRequest.from_http({"messages": [{"role": "assistant", "content": "hello"}]})
    err = expect_error(cfg, complete(bad))
    assert err.status == 400 and "first message" in err.message
    monkeypatch.setenv(KEY_ENV, "sk-ant-wrong-key-777")
    with pytest.raises(UpstreamError) as info:
        run(cfg, complete())
    assert info.value.status == 502 and "credentials" in info.value.message
    assert "sk-ant-wrong-key-777" not in str(info.value.to_json())


# ---------------------------------------------------------------------------------- replay


def small_outcomes() -> Outcomes:
    return Outcomes(
        prompts=np.array(["What is 2+2?", "Name a prime.", "System says hi\nWhat is up?"], dtype=object),
        models=["weak", "strong"],
        quality=np.array([[1.0, 1.0], [0.0, 1.0], [np.nan, 0.0]]),
        cost=np.array([[0.001, 0.01], [0.001, 0.01], [np.nan, 0.02]]),
        responses=np.array([["4", "2 + 2 = 4"], ["9", None], [None, None]], dtype=object),
        name="tiny",
    )


def replay_model(column: str, latency_ms: float = 0.0) -> ModelConfig:
    return model("replay", name=f"replay-{column}", replay=ReplaySource(dataset="tiny", column=column,
                                                                         latency_ms=latency_ms))


def replay_run(column: str, fn: Callable[[Provider], Awaitable[T]], latency_ms: float = 0.0) -> T:
    provider = ReplayProvider.from_outcomes(replay_model(column, latency_ms), small_outcomes())
    return asyncio.run(fn(provider))


def test_replay_answers_the_recorded_response_with_its_quality() -> None:
    c = replay_run("strong", complete(req("What is 2+2?")), latency_ms=1)
    assert c.text == "2 + 2 = 4"
    assert c.body["gearshift_replay"]["quality"] == 1.0 and c.body["gearshift_replay"]["column"] == "strong"
    assert c.body["gearshift_replay"]["dataset"] == "tiny"
    assert c.usage.estimated is True and c.usage.output_tokens == estimate_tokens("2 + 2 = 4")
    c = replay_run("weak", complete(req("Name a prime.")))
    assert c.text == "9" and c.body["gearshift_replay"]["quality"] == 0.0


def test_replay_without_response_text_says_the_recorded_outcome() -> None:
    c = replay_run("strong", complete(req("Name a prime.")))
    assert c.text.startswith("[replay] recorded answer of strong: correct")


def test_replay_matches_the_whole_conversation_text() -> None:
    request = ChatRequest.from_http({"messages": [{"role": "system", "content": "System says hi"},
                                                  {"role": "user", "content": "What is up?"}]})
    c = replay_run("strong", complete(request))
    assert c.text.startswith("[replay] recorded answer of strong: incorrect")


def test_replay_miss_names_model_dataset_and_prompt() -> None:
    with pytest.raises(ReplayMiss) as info:
        replay_run("strong", complete(req("Never seen this prompt before, not in any dataset at all, no")))
    err = info.value
    assert err.status == 404 and err.retryable is False
    assert "replay-strong" in err.message and "tiny" in err.message and "Never seen this prompt" in err.message
    with pytest.raises(ReplayMiss):  # a NaN quality means the model has no answer recorded
        replay_run("weak", complete(req("System says hi\nWhat is up?")))
    with pytest.raises(ReplayMiss):  # a stream misses in start(), before any chunk
        replay_run("weak", lambda p: p.stream(req("nope", stream=True)).start())


def test_replay_stream_chunks_word_groups() -> None:
    async def go(p: Provider) -> tuple[list[dict[str, Any]], Any]:
        return await collect(p, req("What is 2+2?", stream=True, stream_options={"include_usage": True}))

    chunks, s = replay_run("strong", go)
    assert content_of(chunks) == s.text == "2 + 2 = 4"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finish[0]["choices"][0]["finish_reason"] == "stop" and finish[0]["gearshift_replay"]["quality"] == 1.0
    assert chunks[-1]["usage"]["completion_tokens"] == s.usage.output_tokens
    assert split_words("one two three four five six seven eight nine") == [
        "one two three ", "four five six ", "seven eight nine"]


def test_replay_unknown_column_is_a_config_error() -> None:
    from gearshift.errors import ConfigError

    with pytest.raises(ConfigError, match="nope"):
        replay_run("nope", complete(req("What is 2+2?")))


def _first_gsm8k_row(data_dir: Path) -> dict[str, str]:
    with open(data_dir / "routellm" / "gsm8k" / "gsm8k_responses.csv", newline="") as f:
        return next(csv.DictReader(f))


def test_replay_loads_routellm_gsm8k_with_the_lab_loader(data_dir: Path) -> None:
    row = _first_gsm8k_row(data_dir)
    cfg = model("replay", name="gpt4", replay=ReplaySource(dataset="routellm/gsm8k", column="gpt-4-1106-preview"))
    c = asyncio.run(build_provider(cfg, None).complete(req(row["prompt"])))
    assert c.text.strip() == row["gpt-4-1106-preview_response"].strip()
    assert c.body["gearshift_replay"]["quality"] == 1.0


def test_replay_unknown_dataset_is_a_config_error() -> None:
    from gearshift.errors import ConfigError

    cfg = model("replay", name="ghost", replay=ReplaySource(dataset="routellm/nope", column="x"))
    with pytest.raises(ConfigError, match="ghost"):
        asyncio.run(build_provider(cfg, None).complete(req("hi")))


# ---------------------------------------------------------------------------------- SSE parsing


class _Pieces:
    """Bytes arriving in arbitrary pieces, as aiohttp's StreamReader.iter_any() hands them over."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size = data, size

    async def iter_any(self) -> Any:
        for i in range(0, len(self.data), self.size):
            yield self.data[i:i + self.size]


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_sse_parser_handles_split_pieces_crlf_comments_and_multiline_data(size: int) -> None:
    from gearshift.providers.http import sse_events

    raw = (b": keep-alive\r\n\r\nevent: message_start\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n"
           b"data:{\"b\":2}\n\nid: 7\nretry: 10\ndata: [DONE]\n\ndata: tail-without-blank-line")

    async def go() -> list[tuple[str, bytes]]:
        return [e async for e in sse_events(_Pieces(raw, size))]  # type: ignore[arg-type]

    assert asyncio.run(go()) == [("message_start", b'{"a":\n1}'), ("", b'{"b":2}'), ("", b"[DONE]"),
                                 ("", b"tail-without-blank-line")]
