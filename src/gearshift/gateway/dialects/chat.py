"""OpenAI chat completions (`/v1/chat/completions`): the internal form itself, so nothing is translated."""

from __future__ import annotations

from typing import Any

from gearshift.errors import BadRequest, UpstreamError
from gearshift.gateway.dialects.base import Dialect, StreamRender, cost_comment
from gearshift.jsonfast import dumps
from gearshift.providers.base import Completion, Usage
from gearshift.request import ChatRequest
from gearshift.trace import Trace

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}

# Fields routers, gates and providers read: checked so their code may trust the type (null = absent).
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "max_tokens": ((int,), "an integer"), "max_completion_tokens": ((int,), "an integer"),
    "n": ((int,), "an integer"), "temperature": ((int, float), "a number"), "top_p": ((int, float), "a number"),
    "metadata": ((dict,), "an object"), "response_format": ((dict,), "an object"),
    "top_k": ((int, float), "a number"), "parallel_tool_calls": ((bool,), "a boolean"),
    "tool_choice": ((str, dict), "a string or an object"), "stream_options": ((dict,), "an object"),
    "user": ((str,), "a string"), "stop": ((str, list), "a string or an array"),
}


def validate_body(body: Any) -> dict[str, Any]:
    """The schema checks a client gets a 400 for; everything else is passed through untouched."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("`messages` must be a non-empty array", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRequest(f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = m.get("role")
        # Type first: a list or object is unhashable, and the membership test would raise.
        if not isinstance(role, str) or role not in ROLES:
            raise BadRequest(f"messages[{i}].role must be one of {sorted(ROLES)}, got {short(role)}",
                             param=f"messages[{i}].role")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise BadRequest(f"messages[{i}].content must be a string, an array of parts or null",
                             param=f"messages[{i}].content")
        if not _functions(m.get("tool_calls")):
            raise BadRequest(f"messages[{i}].tool_calls must be an array of objects whose `function` is an object",
                             param=f"messages[{i}].tool_calls")
    if not _functions(body.get("tools")):
        raise BadRequest("`tools` must be an array of objects whose `function` is an object", param="tools")
    if "model" in body and not isinstance(body["model"], str):
        raise BadRequest("`model` must be a string", param="model")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest("`stream` must be a boolean", param="stream")
    # The body's few fields, looked up among the checked ones (not every checked field looked up in the body).
    for name, value in body.items():
        checked = _FIELD_TYPES.get(name)
        if checked is None or value is None:
            continue
        kinds, what = checked
        # bool is an int to Python but not a number to OpenAI's schema.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise BadRequest(f"`{name}` must be {what}", param=name)
    return body


def _functions(items: Any) -> bool:
    """Whether `tools` or `tool_calls` is null, or an array of objects whose `function` is an object."""
    if items is None:
        return True
    if not isinstance(items, list):
        return False
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("function", {}), dict):
            return False
    return True


def short(value: Any, limit: int = 80) -> str:
    """`repr(value)`, cut to `limit` characters: a client's bad value quoted in an error."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class ChatStream(StreamRender):
    """Chunks as they are, `data: [DONE]` at the end, with the cost as an SSE comment before it."""

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        return b"data: " + dumps(chunk) + b"\n\n"

    def error(self, e: UpstreamError) -> bytes:
        return b"data: " + dumps(e.to_json()) + b"\n\n"

    def tail(self, trace: Trace, model: str, usage: Usage) -> bytes:
        return cost_comment(trace, model) + b"data: [DONE]\n\n"


class ChatDialect(Dialect):
    """OpenAI chat completions: bodies are forwarded untouched, answers as the upstream sent them."""

    kind = "chat"
    paths = ("/v1/chat/completions", "/chat/completions")

    def parse(self, body: Any, headers: Any, client: str | None) -> ChatRequest:
        return ChatRequest.from_http(validate_body(body), headers, client)

    def render(self, completion: Completion, request: ChatRequest, trace: Trace) -> bytes:
        # The upstream's bytes when it sent the body (nothing here changes it): no second encode.
        return completion.raw or dumps(completion.body)

    def streamer(self, request: ChatRequest, trace: Trace) -> StreamRender:
        return ChatStream()
