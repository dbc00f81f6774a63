"""The Responses dialect's translation, both ways, without a network: request items to chat messages,
and OpenAI chunks to the published event sequence (text, then parallel tool calls)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gearshift.errors import BadRequest
from gearshift.gateway.dialects.responses import ResponsesDialect, to_chat
from gearshift.providers.base import Usage
from gearshift.trace import Trace


def test_items_become_chat_messages() -> None:
    body = to_chat({"model": "m", "instructions": "Be kind.", "input": [
        {"role": "developer", "content": "Terse."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Look at"}, {"type": "input_image", "image_url": "https://x/y.png"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Looking."}]},
        {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "b", "arguments": "{\"k\":1}"},
        {"type": "function_call_output", "call_id": "c1", "output": "A"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "B"}]},
    ], "tool_choice": {"type": "function", "name": "a"}, "text": {"format": {"type": "json_object"}},
        "max_output_tokens": 9, "reasoning": {"effort": "low"}})
    assert body["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "developer", "content": "Terse."},
        {"role": "user", "content": [{"type": "text", "text": "Look at"},
                                     {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        # The text answer and both parallel calls are one assistant message, as chat completions has it.
        {"role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{\"k\":1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "A"},
        {"role": "tool", "tool_call_id": "c2", "content": "B"}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "a"}}
    assert body["response_format"] == {"type": "json_object"} and body["max_tokens"] == 9
    assert body["reasoning_effort"] == "low" and "input" not in body and "instructions" not in body


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": "x", "background": True}, "background"),
    ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0].type"),
    ({"input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice"),
    ({"input": "x", "instructions": ["a"]}, "instructions"),
    ({"input": "x", "stream": "yes"}, "stream"),
])
def test_refusals_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as e:
        to_chat({"model": "m", **body})
    assert e.value.param == param


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"model": "up-1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_chunks_become_the_published_event_sequence() -> None:
    dialect = ResponsesDialect()
    req = dialect.parse({"model": "r", "input": "hi", "stream": True}, {}, None)
    trace = Trace(router="r", requested_model="r", endpoint="responses")
    render = dialect.streamer(req, trace)
    out = render.head() + b"".join(render.chunk(c) for c in [
        chunk({"role": "assistant", "content": "Let me"}), chunk({"content": " check."}),
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "a", "arguments": "{\"q\""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "b", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"), {"model": "up-1", "choices": [], "usage": {"prompt_tokens": 5}}])
    out += render.tail(trace, "small", Usage(5, 7))
    evs = [json.loads(b.split(b"data: ", 1)[1]) for b in out.split(b"\n\n") if b.startswith(b"event: ")]
    assert [(e["type"], e.get("output_index")) for e in evs] == [
        ("response.created", None), ("response.in_progress", None),
        ("response.output_item.added", 0), ("response.content_part.added", 0),
        ("response.output_text.delta", 0), ("response.output_text.delta", 0),
        ("response.output_text.done", 0), ("response.content_part.done", 0), ("response.output_item.done", 0),
        ("response.output_item.added", 1), ("response.function_call_arguments.delta", 1),
        ("response.function_call_arguments.delta", 1), ("response.function_call_arguments.done", 1),
        ("response.output_item.done", 1),
        ("response.output_item.added", 2), ("response.function_call_arguments.delta", 2),
        ("response.function_call_arguments.done", 2), ("response.output_item.done", 2),
        ("response.completed", None)]
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    done = evs[-1]["response"]
    assert done["model"] == "up-1" and done["usage"]["total_tokens"] == 12
    assert [(o["type"], o.get("call_id"), o.get("arguments")) for o in done["output"]] == [
        ("message", None, None), ("function_call", "c1", "{\"q\":1}"), ("function_call", "c2", "{}")]
    assert done["output"][0]["content"][0]["text"] == "Let me check."
