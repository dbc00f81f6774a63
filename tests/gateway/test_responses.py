"""POST /v1/responses: the official openai client and raw HTTP -> gearshift -> a fake chat-completions
(or Anthropic) upstream. The event sequences are checked against the published Responses streaming
reference: response.created, response.in_progress, output_item.added, content_part.added,
output_text.delta..., output_text.done, content_part.done, output_item.done, response.completed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3

from gearshift.errors import ConfigError
from gearshift.gateway.server import running
from tests.support.configs import parse_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config, stored_traces

TOOLS = [{"type": "function", "name": "lookup", "description": "Look a word up.",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}]


@pytest.fixture
def gateway(upstream: FakeUpstream, upstream_key: None, tmp_path: Path) -> Iterator[Any]:
    with running(gateway_config(upstream.url, tmp_path)) as gw:
        yield gw


def client(gw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)


def post(gw: Any, body: dict[str, Any]) -> urllib3.BaseHTTPResponse:
    return urllib3.PoolManager().request("POST", gw.url + "/v1/responses", body=json.dumps(body),
                                         headers={"Content-Type": "application/json"})


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE event; every event has both lines, and no `[DONE]` follows."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip() or block.startswith(": gearshift cost_usd="):  # the cost, an SSE comment
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        assert set(lines) == {"event", "data"}, block
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        out.append((lines["event"], data))
    return out


def test_create_translates_input_instructions_and_usage(gateway: Any, upstream: FakeUpstream) -> None:
    raw = client(gateway).responses.with_raw_response.create(
        model="gearshift/auto", input="hello there", instructions="Be brief.", max_output_tokens=50,
        temperature=0.2, metadata={"tier": "pro"})
    r = raw.parse()
    assert r.output_text == "echo: hello there" and r.status == "completed" and r.object == "response"
    assert r.instructions == "Be brief." and r.max_output_tokens == 50
    assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.total_tokens == (
        r.usage.input_tokens + r.usage.output_tokens)
    assert raw.headers["x-gearshift-model"] == "large"  # metadata routes, as in chat completions
    sent = upstream.requests[-1].json
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.2 and "metadata" not in sent
    [t] = stored_traces(gateway, 1)
    assert t["endpoint"] == "responses" and r.id == "resp_" + t["id"] and t["final_model"] == "large"
    assert t["cost_usd"] == pytest.approx((r.usage.input_tokens * 10 + r.usage.output_tokens * 30) / 1e6)


def test_function_call_and_its_output_round_trip(gateway: Any, upstream: FakeUpstream) -> None:
    c = client(gateway)
    first = c.responses.create(model="gearshift/auto", input="please use lookup", tools=TOOLS)  # type: ignore[arg-type]
    [call] = first.output
    assert call.type == "function_call" and call.name == "lookup" and json.loads(call.arguments) == {
        "query": "please use lookup"}
    assert upstream.requests[-1].json["tools"] == [{"type": "function", "function": {
        "name": "lookup", "description": "Look a word up.", "parameters": TOOLS[0]["parameters"]}}]
    items: list[Any] = [{"role": "user", "content": [{"type": "input_text", "text": "please use lookup"}]},
                        call.model_dump(exclude_none=True),
                        {"type": "function_call_output", "call_id": call.call_id, "output": "42"}]
    second = c.responses.create(model="gearshift/auto", input=items, tools=TOOLS)  # type: ignore[arg-type]
    assert second.output_text == "echo: tool result: 42"
    assert upstream.requests[-1].json["messages"] == [
        {"role": "user", "content": "please use lookup"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": call.call_id, "type": "function", "function": {
            "name": "lookup", "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "42"}]


def test_text_format_json_schema_becomes_response_format(gateway: Any, upstream: FakeUpstream) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    upstream.reply('{"a": 1}')
    r = client(gateway).responses.create(model="gearshift/auto", input="json please", text={"format": {
        "type": "json_schema", "name": "thing", "schema": schema, "strict": True}})
    assert json.loads(r.output_text) == {"a": 1} and r.text is not None and r.text.format.type == "json_schema"
    assert upstream.requests[-1].json["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "thing", "schema": schema, "strict": True}}


def test_stream_event_sequence_is_the_published_one(gateway: Any) -> None:
    r = post(gateway, {"model": "gearshift/auto", "input": "stream me please", "stream": True})
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    assert b"\n\n: gearshift cost_usd=" in r.data and not r.data.endswith(b"[DONE]\n\n")
    evs = events(r.data)
    names = [n for n, _ in evs]
    deltas = names.count("response.output_text.delta")
    assert deltas == 4 and names == ["response.created", "response.in_progress", "response.output_item.added",
                                      "response.content_part.added", *["response.output_text.delta"] * deltas,
                                      "response.output_text.done", "response.content_part.done",
                                      "response.output_item.done", "response.completed"]
    assert [d["sequence_number"] for _, d in evs] == list(range(len(evs)))
    assert evs[0][1]["response"]["status"] == "in_progress" and evs[0][1]["response"]["output"] == []
    text = "".join(d["delta"] for n, d in evs if n == "response.output_text.delta")
    done = evs[-1][1]["response"]
    assert text == "echo: stream me please" == done["output"][0]["content"][0]["text"]
    item_id = evs[2][1]["item"]["id"]
    assert all(d["item_id"] == item_id for n, d in evs[3:-2] if "item_id" in d) and done["output"][0]["id"] == item_id
    assert done["status"] == "completed" and done["usage"]["output_tokens"] > 0


def test_stream_through_the_sdk_with_a_tool_call_on_anthropic(gateway: Any, upstream: FakeUpstream) -> None:
    c = client(gateway)
    with c.responses.stream(model="claude", input="find it", tools=TOOLS, tool_choice="required") as s:  # type: ignore[arg-type]
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert upstream.requests[-1].path == "/v1/messages"
    message, call = final.output  # Claude says what it does, then calls the tool
    assert message.type == "message" and message.content[0].type == "output_text"
    assert call.type == "function_call" and call.name == "lookup" and json.loads(call.arguments) == {"query": "find it"}
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.function_call_arguments.delta" in kinds and kinds[-3:] == [
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]


def test_stream_text_through_the_sdk(gateway: Any) -> None:
    with client(gateway).responses.stream(model="gearshift/auto", input="abc def") as s:
        text = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    assert text == final.output_text == "echo: abc def"
    [t] = stored_traces(gateway, 1)
    assert t["endpoint"] == "responses" and t["streamed"] and t["calls"][0]["output_tokens"] > 0


def test_cut_short_answer_is_incomplete(gateway: Any) -> None:
    r = client(gateway).responses.create(model="gearshift/auto", input="a long question " * 8, max_output_tokens=3)
    assert r.status == "incomplete" and r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    evs = events(post(gateway, {"model": "gearshift/auto", "input": "a long question " * 8, "max_output_tokens": 3,
                                "stream": True}).data)
    assert evs[-1][0] == "response.incomplete"


def test_upstream_failure_mid_stream_is_response_failed(gateway: Any, upstream: FakeUpstream) -> None:
    upstream.error_event(after=2, model="fake-small", error_type="server_error", message="it broke")
    evs = events(post(gateway, {"model": "gearshift/auto", "input": "one two three four", "stream": True}).data)
    names = [n for n, _ in evs]
    assert names[-2:] == ["error", "response.failed"] and "response.completed" not in names
    assert "it broke" in evs[-1][1]["response"]["error"]["message"]
    assert [d["sequence_number"] for _, d in evs] == list(range(len(evs)))


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"previous_response_id": "resp_1"}, 400, "previous_response_id"),
    ({"store": True}, 400, "store"),
    ({"tools": [{"type": "web_search"}]}, 400, "tools[0]"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, 400, "input[0]"),
    ({"input": []}, 400, "input"),
    ({"text": {"format": {"type": "yaml"}}}, 400, "text.format"),
    ({"model": "nope"}, 404, "model"),
])
def test_errors_are_openai_shaped_and_say_what_is_missing(gateway: Any, body: dict[str, Any], status: int,
                                                          param: str) -> None:
    r = post(gateway, {"model": "gearshift/auto", "input": "x", **body})
    assert r.status == status
    err = json.loads(r.data)["error"]
    assert err["param"] == param and err["message"] and err["type"] == "invalid_request_error"


def test_sdk_raises_on_refused_request(gateway: Any) -> None:
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        client(gateway).responses.create(model="gearshift/auto", input="x", previous_response_id="resp_1")


def test_metrics_count_requests_by_endpoint(gateway: Any) -> None:
    c = client(gateway)
    c.responses.create(model="gearshift/auto", input="a")
    c.chat.completions.create(model="gearshift/auto", messages=[{"role": "user", "content": "b"}])
    stored_traces(gateway, 2)
    text = urllib3.PoolManager().request("GET", gateway.url + "/metrics").data.decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("gearshift_requests_total{")]
    assert any('endpoint="responses"' in ln and ln.endswith(" 1") for ln in lines)
    assert any('endpoint="chat"' in ln and ln.endswith(" 1") for ln in lines)


def test_shadow_pairs_are_scored_like_chat(upstream: FakeUpstream, tmp_path: Path) -> None:
    routers = {"gearshift/auto": {"kind": "rules", "default": "small", "rules": [], "shadow": {"rate": 1.0}}}
    upstream.reply("Work... #### 12", model="fake-large", times=2)
    with running(gateway_config(upstream.url, tmp_path, routers=routers)) as gw:
        upstream.reply("So the answer is 12.", model="fake-small")
        client(gw).responses.create(model="gearshift/auto", input="twelve?")
        upstream.reply("The answer is 8", model="fake-small")
        with client(gw).responses.stream(model="gearshift/auto", input="twelve again?") as s:
            s.get_final_response()
        deadline = time.monotonic() + 20
        while gw.gateway.writer.updated < 2 and time.monotonic() < deadline:  # both pairs added to their traces
            time.sleep(0.05)
        rows = stored_traces(gw, 2)
    agreement = {r["prompt"]: [v for v in r["verdicts"] if v["gate"] == "shadow_agreement"][0] for r in rows}
    assert all(r["endpoint"] == "responses" and r["shadowed"] for r in rows)
    assert agreement["twelve?"]["passed"] and agreement["twelve?"]["method"] == "final_answer"
    assert not agreement["twelve again?"]["passed"]


@pytest.fixture
def native(upstream: FakeUpstream, upstream_key: None, tmp_path: Path) -> Iterator[Any]:
    """The gateway with `large` on its upstream's own Responses API (`api: responses`)."""
    config = gateway_config(upstream.url, tmp_path)
    config.models["large"] = config.models["large"].model_copy(update={"api": "responses"})
    with running(config) as gw:
        yield gw


def test_a_native_responses_upstream_gets_the_request_as_sent(native: Any, upstream: FakeUpstream) -> None:
    c = client(native)
    r = c.responses.create(model="large", input=[{"role": "user", "content": "hello"}], instructions="Be brief.",
                           max_output_tokens=50, metadata={"tier": "pro"})
    sent = upstream.requests[-1]
    assert sent.path == "/v1/responses" and sent.json == {
        "model": "fake-large", "input": [{"role": "user", "content": "hello"}], "instructions": "Be brief.",
        "max_output_tokens": 50, "stream": False, "store": False}  # routing metadata stays in gearshift
    assert r.output_text == "echo: hello" and r.usage is not None and r.usage.input_tokens > 0
    [t] = stored_traces(native, 1)
    assert t["final_model"] == "large" and t["calls"][0]["input_tokens"] == r.usage.input_tokens
    # Chat clients of the same model still use its chat completions.
    c.chat.completions.create(model="large", messages=[{"role": "user", "content": "hi"}])
    assert upstream.requests[-1].path == "/v1/chat/completions"


def test_a_native_responses_upstream_streams_a_tool_call(native: Any, upstream: FakeUpstream) -> None:
    with client(native).responses.stream(model="large", input="find it", tools=TOOLS, tool_choice="required") as s:  # type: ignore[arg-type]
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert upstream.requests[-1].path == "/v1/responses" and upstream.requests[-1].json["stream"] is True
    [call] = final.output  # the upstream's reasoning item has no chat form: not passed on
    assert call.type == "function_call" and call.name == "lookup" and json.loads(call.arguments) == {"query": "find it"}
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    [t] = stored_traces(native, 1)
    assert t["streamed"] and t["calls"][0]["output_tokens"] > 0 and not t["calls"][0]["usage_estimated"]


def test_api_responses_is_refused_where_the_provider_has_none(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = gateway_config(upstream.url, tmp_path).model_dump()
    config["models"]["claude"]["api"] = "responses"
    with pytest.raises(ConfigError, match=r"models.claude.api: provider 'anthropic' has no Responses API"):
        parse_config(config, base_dir=tmp_path)


def test_a_native_upstream_error_event_mid_stream_is_response_failed(native: Any, upstream: FakeUpstream) -> None:
    upstream.error_event(after=6, model="fake-large", error_type="server_error", message="native broke")
    evs = events(post(native, {"model": "large", "input": "one two three four five", "stream": True}).data)
    names = [n for n, _ in evs]
    assert "response.output_text.delta" in names and names[-2:] == ["error", "response.failed"]
    assert "native broke" in evs[-1][1]["response"]["error"]["message"]
