"""Anthropic Messages (`/v1/messages`, `/v1/messages/count_tokens`), inbound: Anthropic SDK and Claude Code
clients, routed to any provider like chat completions.

A Messages body becomes the internal OpenAI chat body (system -> a system message, content blocks ->
content parts, tool_use / tool_result -> assistant tool_calls / tool messages, stop_sequences -> stop,
metadata.user_id -> user), which routers, gates, shadow and OpenAI-compatible upstreams read; the
OpenAI-form answer or chunks become a Message or Anthropic's stream events. It is the inverse of
providers/anthropic.py, so the two compose to the client's request (tests/gateway/dialects/test_messages.py
checks the round trip); an Anthropic upstream is nonetheless sent the client's own body (ChatRequest.native),
which also keeps what the translation does not carry: `cache_control`, `is_error` on tool results, thinking
blocks sent back, fields it does not know. Thinking in answers comes back, signed, from `thinking_blocks`.
Documents and server tools are refused (400) for every upstream.
"""

from __future__ import annotations

from typing import Any

from gearshift.errors import BadRequest, GearshiftError, UpstreamError
from gearshift.gateway.dialects.base import Dialect, StreamRender
from gearshift.gateway.dialects.chat import short
from gearshift.jsonfast import JSONDecodeError, dumps, loads
from gearshift.providers.anthropic import FINISH_REASONS, STOP_STRING
from gearshift.providers.base import Completion, Usage
from gearshift.providers.http import ANTHROPIC_STATUS
from gearshift.request import ChatRequest, content_text, metadata_from_headers
from gearshift.trace import Trace

# OpenAI finish_reason -> Anthropic stop_reason: the inverse of the provider's table, first name wins.
STOP_REASONS: dict[str, str] = {"function_call": "tool_use"}
for _anthropic, _openai in FINISH_REASONS.items():
    STOP_REASONS.setdefault(_openai, _anthropic)
# HTTP status -> Anthropic error type: the inverse of the table that reads upstream errors.
ERROR_TYPES = {status: kind for kind, status in ANTHROPIC_STATUS.items()}

# Messages API fields carried into the internal body unchanged (OpenAI-compatible upstreams take them or
# drop them per `drop_params`; the Anthropic provider translates them back).
_SAME = ("temperature", "top_p", "top_k", "thinking")
_NUMBERS = ("temperature", "top_p", "top_k")


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """A message's content as a list of block objects (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content must be a string or an array of content blocks", param=f"{where}.content")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise BadRequest(f"{where}.content[{j}] must be an object with a `type`", param=f"{where}.content[{j}]")
    return content


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    """An Anthropic image block as an OpenAI image_url part (base64 as a data URL)."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict) and isinstance(source.get("data"), str):
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
    elif kind == "url" and isinstance(source, dict) and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise BadRequest(f"{where}.source must be {{type: base64, media_type, data}} or {{type: url, url}}",
                         param=f"{where}.source")
    return {"type": "image_url", "image_url": {"url": url}}


def _parts(blocks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Text and image blocks as OpenAI content parts; anything else is refused by name."""
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image(block, f"{where}[{j}]"))
        else:
            raise BadRequest(f"{where}[{j}]: content blocks of type {short(kind)} are not supported here "
                             "(text, image, tool_use, tool_result are)", param=f"{where}[{j}].type")
    return parts


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    """A tool_result block as an OpenAI tool message (text as a string; images, if any, as parts)."""
    content = block.get("content")
    if content is None or isinstance(content, str):
        out: Any = content or ""
    else:
        parts = _parts(_blocks(content, where), f"{where}.content")
        out = content_text(parts) if all(p["type"] == "text" for p in parts) else parts
    return {"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""), "content": out}


def _user(content: Any, where: str) -> list[dict[str, Any]]:
    """A user turn: its tool results as tool messages first (OpenAI wants them right after the calls),
    then its text and images as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results, rest = [], []
    for j, block in enumerate(_blocks(content, where)):
        if block["type"] == "tool_result":
            results.append(_tool_result(block, f"{where}.content[{j}]"))
        else:
            rest.append(block)
    out = results
    if rest:
        out.append({"role": "user", "content": _parts(rest, f"{where}.content")})
    return out


def _assistant(content: Any, where: str) -> dict[str, Any]:
    """An assistant turn: its text as content, its tool_use blocks as tool_calls (thinking is dropped)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(_blocks(content, where)):
        kind = block["type"]
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append({"id": str(block.get("id") or ""), "type": "function",
                          "function": {"name": str(block.get("name") or ""),
                                       "arguments": dumps(block.get("input") or {}).decode()}})
        elif kind not in ("thinking", "redacted_thinking"):
            raise BadRequest(f"{where}.content[{j}]: assistant blocks of type {short(kind)} are not supported here "
                             "(text, tool_use are)", param=f"{where}.content[{j}].type")
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        out["tool_calls"] = calls
    return out


def _system(system: Any) -> dict[str, Any] | None:
    if system is None or system == "" or system == []:
        return None
    if isinstance(system, str):
        return {"role": "system", "content": system}
    if isinstance(system, list):
        return {"role": "system", "content": _parts(_blocks(system, "system"), "system")}
    raise BadRequest("`system` must be a string or an array of text blocks", param="system")


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise BadRequest("`tools` must be an array", param="tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise BadRequest(f"tools[{i}] must be an object with a `name`", param=f"tools[{i}]")
        if tool.get("type") not in (None, "custom"):
            raise BadRequest(f"tools[{i}]: server tools ({short(tool.get('type'))}) are not supported here: "
                             "declare client tools with name, description and input_schema", param=f"tools[{i}].type")
        fn: dict[str, Any] = {"name": tool["name"],
                              "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any, body: dict[str, Any]) -> None:
    """Anthropic's tool_choice as OpenAI's tool_choice and parallel_tool_calls, set on `body`."""
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        body["tool_choice"] = "auto"
    elif kind == "any":
        body["tool_choice"] = "required"
    elif kind == "none":
        body["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice, dict) and isinstance(choice.get("name"), str):
        body["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise BadRequest("`tool_choice` must be {type: auto | any | none} or {type: tool, name}", param="tool_choice")
    if isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True:
        body["parallel_tool_calls"] = False


def to_chat(body: Any, require_max_tokens: bool = True) -> dict[str, Any]:
    """The internal (OpenAI chat) body of a Messages API body; BadRequest for what the API refuses.
    Fields it does not know are left out (an Anthropic upstream still gets them: ChatRequest.native)."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model", "")
    if not isinstance(model, str):
        raise BadRequest("`model` must be a string", param="model")
    out: dict[str, Any] = {"model": model}
    max_tokens = body.get("max_tokens")
    if max_tokens is not None or require_max_tokens:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise BadRequest("`max_tokens` is required: a positive integer", param="max_tokens")
        out["max_tokens"] = max_tokens
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("`messages` must be a non-empty array", param="messages")
    chat: list[dict[str, Any]] = []
    system = _system(body.get("system"))
    if system is not None:
        chat.append(system)
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        role = m.get("role") if isinstance(m, dict) else None
        if role == "user":
            chat.extend(_user(m.get("content"), where))
        elif role == "assistant":
            chat.append(_assistant(m.get("content"), where))
        else:
            raise BadRequest(f"{where}.role must be 'user' or 'assistant', got {short(role)}", param=f"{where}.role")
    out["messages"] = chat
    for key in _NUMBERS:
        value = body.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise BadRequest(f"`{key}` must be a number", param=key)
    for key in _SAME:
        if body.get(key) is not None:
            out[key] = body[key]
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise BadRequest("`stop_sequences` must be an array of strings", param="stop_sequences")
        if stops:
            out["stop"] = stops
    meta = body.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            raise BadRequest("`metadata` must be an object", param="metadata")
        user = meta.get("user_id")
        if user is not None:
            out["user"] = str(user)
        rest = {k: v for k, v in meta.items() if k != "user_id"}
        if rest:  # gearshift's routing hints, as in chat's metadata
            out["metadata"] = rest
    if body.get("tools") is not None:
        out["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], out)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("`stream` must be a boolean", param="stream")
    if stream:
        out["stream"] = True
    return out


# ---------------------------------------------------------------- OpenAI answer -> Message


def _input(arguments: Any) -> Any:
    """A tool call's arguments (a JSON string) as tool_use input; what is not JSON is kept as its text."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        return loads(arguments)
    except JSONDecodeError:
        return {"arguments": arguments}


def message_usage(usage: dict[str, Any] | None, fallback: Usage) -> dict[str, Any]:
    """OpenAI usage as Anthropic's: cached prompt tokens are reported apart, as Anthropic does."""
    if not isinstance(usage, dict):
        return {"input_tokens": fallback.input_tokens, "output_tokens": fallback.output_tokens}
    details = usage.get("prompt_tokens_details")
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    out = {"input_tokens": int(usage.get("prompt_tokens") or 0) - cached,
           "output_tokens": int(usage.get("completion_tokens") or 0)}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def to_message(doc: dict[str, Any], msg_id: str, usage: Usage) -> dict[str, Any]:
    """The Messages API answer for an OpenAI `chat.completion` (`usage` when the body has none)."""
    choices = doc.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    text = content_text(message.get("content"))
    calls = message.get("tool_calls") or []
    content: list[dict[str, Any]] = [b for b in message.get("thinking_blocks") or [] if isinstance(b, dict)]
    if text or not calls:
        content.append({"type": "text", "text": text})
    for call in calls:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or "",
                        "input": _input(fn.get("arguments"))})
    stop, seq = stop_reason(choice)
    return {"id": msg_id, "type": "message", "role": "assistant", "model": doc.get("model") or "",
            "content": content, "stop_reason": stop, "stop_sequence": seq,
            "usage": message_usage(doc.get("usage"), usage)}


def stop_reason(choice: dict[str, Any]) -> tuple[str, str | None]:
    """A choice's stop_reason and stop_sequence, Anthropic's way (the stop string when the upstream names it)."""
    seq = choice.get(STOP_STRING)
    if choice.get("finish_reason") == "stop" and isinstance(seq, str) and seq:
        return "stop_sequence", seq
    return STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"), None


def error_body(e: GearshiftError) -> dict[str, Any]:
    """An error in Anthropic's shape, typed by its status."""
    overloaded = e.status == 503 or (isinstance(e, UpstreamError) and e.upstream_status == 529)  # open circuit, busy upstream
    kind = "overloaded_error" if overloaded else ERROR_TYPES.get(e.status) or (
        "invalid_request_error" if e.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": e.message}}


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + dumps({"type": kind, **data}) + b"\n\n"


class MessagesStream(StreamRender):
    """OpenAI chunks as Anthropic's events: message_start, per content block a start, deltas and a stop,
    then message_delta (stop_reason, usage) and message_stop; an upstream failure as an `error` event."""

    def __init__(self, msg_id: str, model: str, estimated_input: int) -> None:
        self.id, self.model, self.estimated_input = msg_id, model, estimated_input
        self.started = self.failed = self.signed = False
        self.block = -1  # index of the open content block (-1: none)
        self.open: str | None = None  # its type: "text" | "tool_use" | "thinking" | "redacted_thinking"
        self.tool: int | None = None  # the OpenAI tool_calls index the open tool_use block carries
        self.stop = "end_turn"
        self.stop_sequence: str | None = None

    def _start(self, model: str) -> bytes:
        self.started = True
        message: dict[str, Any] = {"id": self.id, "type": "message", "role": "assistant", "model": model or self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": self.estimated_input, "output_tokens": 0}}
        return _event("message_start", {"message": message})

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return _event("content_block_stop", {"index": self.block})

    def _open(self, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.block += 1
        self.open = block["type"]
        out += _event("content_block_start", {"index": self.block, "content_block": block})
        if self.block == 0:
            out += _event("ping", {})  # where Anthropic sends its first ping
        return out

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self.started else self._start(str(chunk.get("model") or ""))
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return out
        choice = choices[0]
        delta = choice.get("delta") or {}
        for block in delta.get("thinking_blocks") or ():
            out += self._thinking(block)
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.open != "text":
                out += self._open({"type": "text", "text": ""})
            out += _event("content_block_delta", {"index": self.block, "delta": {"type": "text_delta", "text": text}})
        for call in delta.get("tool_calls") or []:
            fn = call.get("function") or {}
            if call.get("id") or self.open != "tool_use" or call.get("index") != self.tool:
                self.tool = call.get("index")
                out += self._open({"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or "",
                                   "input": {}})
            args = fn.get("arguments")
            if isinstance(args, str) and args:
                out += _event("content_block_delta", {"index": self.block,
                                                      "delta": {"type": "input_json_delta", "partial_json": args}})
        if choice.get("finish_reason"):
            self.stop, self.stop_sequence = stop_reason(choice)
        return out

    def _thinking(self, block: dict[str, Any]) -> bytes:
        """A piece of extended thinking: its text, its signature (which ends the block), or a redacted block."""
        if block.get("type") == "redacted_thinking":
            return self._open(block)
        out = b""
        if self.open != "thinking" or self.signed:
            out += self._open({"type": "thinking", "thinking": "", "signature": ""})
            self.signed = False
        if block.get("thinking"):
            out += _event("content_block_delta", {"index": self.block,
                                                  "delta": {"type": "thinking_delta", "thinking": block["thinking"]}})
        if block.get("signature"):
            self.signed = True
            out += _event("content_block_delta", {"index": self.block,
                                                  "delta": {"type": "signature_delta", "signature": block["signature"]}})
        return out

    def error(self, e: UpstreamError) -> bytes:
        self.failed = True
        return _event("error", error_body(e))

    def tail(self, trace: Trace, model: str, usage: Usage) -> bytes:
        if self.failed:
            return b""  # after an error event nothing follows
        out = b"" if self.started else self._start(model)
        if self.block < 0:  # an empty answer still has its one (empty) text block
            out += self._open({"type": "text", "text": ""})
        out += self._close()
        out += _event("message_delta", {"delta": {"stop_reason": self.stop, "stop_sequence": self.stop_sequence},
                                        "usage": {"input_tokens": usage.input_tokens,
                                                  "output_tokens": usage.output_tokens}})
        # The streamed call's cost is known only now: an SSE comment, which Anthropic's clients skip.
        out += f": gearshift cost_usd={trace.cost_usd:.8f} model={model}\n\n".encode()
        return out + _event("message_stop", {})


class MessagesDialect(Dialect):
    """Anthropic's Messages API: `x-api-key` or bearer keys, Anthropic's errors and events."""

    kind = "messages"
    paths = ("/v1/messages",)
    count_paths = ("/v1/messages/count_tokens",)
    key_hint = "`x-api-key: <key>` or `Authorization: Bearer <key>`"

    def token(self, headers: Any) -> bytes:
        key = headers.get("x-api-key", "")
        return key.strip().encode() if key else super().token(headers)

    def parse(self, body: Any, headers: Any, client: str | None) -> ChatRequest:
        req = ChatRequest.from_http(to_chat(body), headers, client)
        req.native, req.api = body, self.kind  # an Anthropic upstream gets the client's own body
        return req

    def count(self, body: Any, headers: Any, client: str | None) -> bytes:
        # Estimated as everywhere in gearshift (ChatRequest.estimated_tokens), whatever the model.
        req = ChatRequest(body=to_chat(body, require_max_tokens=False), metadata=metadata_from_headers(headers),
                          client=client)
        return dumps({"input_tokens": req.estimated_tokens()})

    def render(self, completion: Completion, request: ChatRequest, trace: Trace) -> bytes:
        return dumps(to_message(completion.body, "msg_" + trace.id, completion.usage))

    def streamer(self, request: ChatRequest, trace: Trace) -> StreamRender:
        return MessagesStream("msg_" + trace.id, trace.final_model or "", request.estimated_tokens())

    def error(self, e: GearshiftError) -> bytes:
        return dumps(error_body(e))
