"""OpenAI's Responses API as an upstream (`api: responses` on an `openai` model): a request that came in
on /v1/responses is sent to the model's /responses as the client wrote it, and the answer is read back
into the chat form routers, gates, traces and shadow pairs share.

What the chat form has no place for (reasoning items, annotations, hosted tools' items) does not
reach the client: the gateway renders the Responses answer from the chat form, as for any upstream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

from gearshift.jsonfast import loads
from gearshift.providers.base import Completion, Usage, estimate_tokens
from gearshift.providers.http import SSEStream, bad_body, event_error
from gearshift.request import ChatRequest, strip_metadata

if TYPE_CHECKING:
    from gearshift.config import ModelConfig


def responses_body(request: ChatRequest, model: ModelConfig, routing_keys: frozenset[str], stream: bool) -> dict[str, Any]:
    """The client's Responses body for the upstream: its model id, no routing hints, and not stored
    (gearshift continues no stored response, so the upstream need not keep one)."""
    body = dict(request.native or {})
    body["model"] = model.upstream_id
    strip_metadata(body, model.forward_metadata, routing_keys)
    body["stream"] = stream
    body["store"] = False
    return body


def _usage(doc: dict[str, Any], text: str, request: ChatRequest) -> Usage:
    usage = doc.get("usage")
    if isinstance(usage, dict) and usage.get("input_tokens") is not None:
        return Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0))
    return Usage(request.estimated_tokens(), estimate_tokens(text), estimated=True)


def _finish(doc: dict[str, Any], calls: bool) -> str:
    details = doc.get("incomplete_details")
    if doc.get("status") == "incomplete" and isinstance(details, dict):
        return "length" if details.get("reason") == "max_output_tokens" else "content_filter"
    return "tool_calls" if calls else "stop"


def to_completion(doc: Any, request: ChatRequest, model: ModelConfig, raw: bytes) -> Completion:
    """A Responses `response` object as a chat completion (text of its messages, its function calls)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("output"), list):
        if isinstance(doc, dict) and doc.get("error"):
            raise event_error(model, doc["error"], None)
        raise bad_body(model, "no `output` in the response")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in doc["output"]:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            texts += [str(p.get("text", "")) for p in item.get("content") or ()
                      if isinstance(p, dict) and p.get("type") == "output_text"]
        elif item.get("type") == "function_call":
            calls.append({"id": item.get("call_id") or item.get("id"), "type": "function",
                          "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""}})
    text = "".join(texts)
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    usage = _usage(doc, text, request)
    body = {"id": doc.get("id", ""), "object": "chat.completion", "created": int(doc.get("created_at") or 0),
            "model": doc.get("model", model.upstream_id),
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(doc, bool(calls))}],
            "usage": {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                      "total_tokens": usage.input_tokens + usage.output_tokens}}
    return Completion(body, usage)


class ResponsesEventStream(SSEStream):
    """A streamed Responses call read as OpenAI chunks: text deltas, function calls (one tool_calls
    index per function_call item), and the finish and usage from `response.completed`."""

    async def _translate(self, events: AsyncIterator[tuple[str, bytes]]) -> AsyncGenerator[dict[str, Any], None]:
        calls: dict[int, int] = {}  # output_index -> tool_calls index
        base: dict[str, Any] = {"object": "chat.completion.chunk", "model": self.model.upstream_id}
        async for _, data in events:
            event = loads(data)
            if not isinstance(event, dict):
                continue
            kind = event.get("type")
            if kind == "response.output_text.delta":
                delta = str(event.get("delta", ""))
                self._parts.append(delta)
                yield {**base, "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": None}]}
            elif kind == "response.output_item.added" and (event.get("item") or {}).get("type") == "function_call":
                item = event["item"]
                index = calls[int(event.get("output_index") or 0)] = len(calls)
                call = {"index": index, "id": item.get("call_id"), "type": "function",
                        "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""}}
                yield {**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
            elif kind == "response.function_call_arguments.delta":
                index = calls.get(int(event.get("output_index") or 0), 0)
                call = {"index": index, "function": {"arguments": str(event.get("delta", ""))}}
                yield {**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
            elif kind in ("response.completed", "response.incomplete"):
                doc = event.get("response") or {}
                usage = _usage(doc, "".join(self._parts), self.request)
                if not usage.estimated:
                    self._reported = (usage.input_tokens, usage.output_tokens)
                base["model"] = doc.get("model", base["model"])
                yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": _finish(doc, bool(calls))}]}
                return
            elif kind in ("response.failed", "error"):
                error = (event.get("response") or {}).get("error") if kind == "response.failed" else event
                raise event_error(self.model, error or {"message": "the upstream response failed"}, self._secret)
