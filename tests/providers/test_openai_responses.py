"""Reading OpenAI's Responses answers into the chat form (`api: responses` models)."""

from __future__ import annotations

import pytest

from gearshift.config import ModelConfig, Price
from gearshift.errors import UpstreamError
from gearshift.providers.openai_responses import responses_body, to_completion
from gearshift.request import ROUTING_KEYS, ChatRequest

MODEL = ModelConfig(name="gpt", provider="openai", upstream_id="gpt-x", price=Price(input=1, output=2), api="responses")


def test_output_items_become_a_chat_message() -> None:
    doc = {"id": "resp_1", "model": "gpt-x", "status": "completed", "output": [
        {"type": "reasoning", "summary": []},
        {"type": "message", "content": [{"type": "output_text", "text": "Calling."}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}],
        "usage": {"input_tokens": 7, "output_tokens": 3}}
    c = to_completion(doc, ChatRequest(body={}), MODEL, b"")
    assert c.body["choices"][0] == {"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Calling.",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}
    assert (c.usage.input_tokens, c.usage.output_tokens, c.usage.estimated) == (7, 3, False) and c.text == "Calling."


def test_cut_short_and_usage_less_answers() -> None:
    doc = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
           "output": [{"type": "message", "content": [{"type": "output_text", "text": "abcdefgh"}]}]}
    c = to_completion(doc, ChatRequest.from_prompt("hello there"), MODEL, b"")
    assert c.body["choices"][0]["finish_reason"] == "length" and c.usage.estimated and c.usage.output_tokens == 2


def test_an_error_body_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="overloaded"):
        to_completion({"error": {"message": "overloaded", "type": "server_error"}}, ChatRequest(body={}), MODEL, b"")


def test_the_body_sent_is_the_clients_without_routing_hints_and_unstored() -> None:
    req = ChatRequest(body={}, native={"model": "gearshift/auto", "input": "hi", "metadata": {"tier": "pro", "app": "x"}})
    assert responses_body(req, MODEL, ROUTING_KEYS, stream=True) == {"model": "gpt-x", "input": "hi", "stream": True,
                                                                     "store": False}
