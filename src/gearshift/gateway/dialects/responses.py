"""OpenAI's Responses API (`/v1/responses`), stateless: translated to the internal chat form and back.

In: `input` (a string, or message, function_call and function_call_output items), `instructions` (a
system message), function `tools` and `tool_choice`, `text.format` (json_schema or json_object, as
`response_format`), `max_output_tokens`, sampling fields and `metadata`. Out: a `response` object
with `message` and `function_call` items and usage, or, streamed, the published event sequence
(`response.created` ... `response.completed`) with sequence numbers. Every upstream, Anthropic
included, answers the translated chat request, except models with `api: responses`, whose provider
sends the client's body (`ChatRequest.native`) to their own Responses API. Stored responses (`previous_response_id`,
`store: true`, `conversation`) need state this gateway does not keep: refused with a 400 that says so.
"""

from __future__ import annotations

import time
from typing import Any

from gearshift.errors import BadRequest, UpstreamError
from gearshift.gateway.dialects.base import Dialect, StreamRender, cost_comment
from gearshift.gateway.dialects.chat import short, validate_body
from gearshift.jsonfast import dumps
from gearshift.providers.base import Completion, Usage
from gearshift.request import ChatRequest, content_text
from gearshift.trace import Trace

# Responses fields with the same meaning and type in chat completions: copied across as they are.
_SAME = ("model", "stream", "temperature", "top_p", "parallel_tool_calls", "user", "metadata", "service_tier")
# Fields that need stored responses or OpenAI-hosted state: refused, naming what is missing.
_STATEFUL = {
    "previous_response_id": "gearshift keeps no responses to continue from: send the whole conversation in `input`",
    "conversation": "gearshift keeps no conversations: send the whole conversation in `input`",
    "background": "gearshift answers in the foreground only: leave `background` out or false",
    "prompt": "gearshift has no stored prompt templates: send `instructions` and `input`",
}
_ROLES = {"user", "system", "developer", "assistant"}
# Input content part types -> the chat part they become (text parts become plain text).
_TEXT_PARTS = {"input_text", "output_text", "text"}
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _refuse(message: str, param: str) -> BadRequest:
    return BadRequest(message, param=param, code="unsupported_parameter")


def to_chat(body: Any) -> dict[str, Any]:
    """The chat-completions body of a Responses request body; BadRequest for what cannot be translated."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    for name, fix in _STATEFUL.items():
        if body.get(name):
            raise _refuse(f"`{name}` is not supported: {fix}", name)
    if body.get("store") is True:
        raise _refuse("`store: true` is not supported: gearshift does not keep responses for later retrieval "
                      "(its traces record the request instead); send `store: false` or leave it out", "store")
    out: dict[str, Any] = {k: body[k] for k in _SAME if body.get(k) is not None}
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise BadRequest("`instructions` must be a string", param="instructions")
        messages.append({"role": "system", "content": instructions})
    messages += _messages(body.get("input"))
    out["messages"] = messages
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _tool_choice(body["tool_choice"])
    text = body.get("text")
    if text is not None:
        if not isinstance(text, dict):
            raise BadRequest("`text` must be an object", param="text")
        fmt = _format(text.get("format"))
        if fmt is not None:
            out["response_format"] = fmt
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        out["reasoning_effort"] = reasoning["effort"]
    return validate_body(out)


def _messages(items: Any) -> list[dict[str, Any]]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise BadRequest("`input` must be a string or a non-empty array of items", param="input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in _ROLES:
                raise BadRequest(f"{where}.role must be one of {sorted(_ROLES)}, got {short(role)}",
                                 param=f"{where}.role")
            out.append({"role": role, "content": _content(item.get("content"), f"{where}.content")})
        elif kind == "function_call":
            call = {"id": item.get("call_id") or item.get("id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""}}
            last = out[-1] if out else None
            # Parallel calls (and a text answer before them) are one assistant message in chat form.
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else content_text(_content(output, f"{where}.output"))
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        elif kind == "reasoning":
            continue  # a model's own reasoning summary: no chat-completions form, and not needed to continue
        elif kind == "item_reference":
            raise _refuse(f"{where}: `item_reference` needs stored items, which gearshift does not keep: "
                          "send the item itself", where)
        else:
            raise _refuse(f"{where}: input items of type {short(kind)} are not supported; supported: message, "
                          "function_call, function_call_output, reasoning (ignored)", f"{where}.type")
    return out


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    """Chat content of a Responses message's content: a string, or input/output parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where} must be a string or an array of content parts", param=where)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS:
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _refuse(f"{where}[{j}]: content parts of type {short(kind)} are not supported; supported: "
                          "input_text, output_text, refusal, input_image with an image_url", f"{where}[{j}].type")
    # One text part is sent as a string: every chat server takes that, not all take arrays of parts.
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise BadRequest("`tools` must be an array", param="tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise _refuse(f"tools[{i}]: only function tools (with a `name`) are supported, got type {short(kind)}; "
                          "hosted tools (web search, file search, computer use...) run only on OpenAI",
                          f"tools[{i}]")
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _refuse(f"`tool_choice` must be auto, none, required or a function; got {short(choice)}", "tool_choice")


def _format(fmt: Any) -> dict[str, Any] | None:
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise BadRequest(f"`text.format.type` must be text, json_object or json_schema; got {short(kind)}",
                     param="text.format")


# -- answers ---------------------------------------------------------------------------------------


def usage_json(usage: Usage, cached: int = 0) -> dict[str, Any]:
    """Responses `usage` of a call's usage."""
    return {"input_tokens": usage.input_tokens, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": usage.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.input_tokens + usage.output_tokens}


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}


def _response(trace: Trace, request: ChatRequest, model: str, status: str, output: list[dict[str, Any]],
              usage: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
    """A `response` object: the client's settings echoed, the output and usage as they stand."""
    source = request.native or {}
    text = source.get("text") if isinstance(source.get("text"), dict) else None
    reason = _INCOMPLETE.get(finish or "")
    return {
        "id": "resp_" + trace.id, "object": "response", "created_at": int(trace.created),
        "status": "incomplete" if status == "completed" and reason else status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": None, "incomplete_details": {"reason": reason} if reason else None,
        "instructions": source.get("instructions"), "max_output_tokens": source.get("max_output_tokens"),
        "model": model, "output": output, "parallel_tool_calls": source.get("parallel_tool_calls", True),
        "previous_response_id": None, "reasoning": {"effort": None, "summary": None}, "store": False,
        "temperature": source.get("temperature"), "text": text or {"format": {"type": "text"}},
        "tool_choice": source.get("tool_choice", "auto"), "tools": source.get("tools") or [],
        "top_p": source.get("top_p"), "truncation": "disabled", "usage": usage,
        "user": source.get("user"), "metadata": source.get("metadata") or {},
    }


def _cached(body: dict[str, Any]) -> int:
    details = (body.get("usage") or {}).get("prompt_tokens_details") if isinstance(body.get("usage"), dict) else None
    return int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0


class ResponsesStream(StreamRender):
    """OpenAI chunks as Responses events: a message item for text, a function_call item per tool call."""

    def __init__(self, request: ChatRequest, trace: Trace) -> None:
        self.request, self.trace = request, trace
        self.seq = 0
        self.model = request.model
        self.output: list[dict[str, Any]] = []  # finished items
        self.text: list[str] | None = None  # the open message item's text so far
        self.call: dict[str, Any] | None = None  # the open function_call item
        self.call_index: int | None = None  # its index among the chunks' tool_calls
        self.finish: str | None = None
        self.failed = False

    def _event(self, kind: str, **fields: Any) -> bytes:
        fields["type"] = kind
        fields["sequence_number"] = self.seq
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + dumps(fields) + b"\n\n"

    def head(self) -> bytes:
        snapshot = _response(self.trace, self.request, self.model, "in_progress", [], None)
        return (self._event("response.created", response=snapshot)
                + self._event("response.in_progress", response=snapshot))

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        if chunk.get("model"):
            self.model = chunk["model"]
        choices = chunk.get("choices")
        if not choices:
            return b""
        choice = choices[0]
        delta = choice.get("delta") or {}
        out = b""
        content = delta.get("content")
        if content:
            out += self._text(content)
        for tc in delta.get("tool_calls") or ():
            out += self._tool_call(tc)
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]
        return out

    def _text(self, content: str) -> bytes:
        out = b""
        if self.call is not None:
            out += self._close_call()
        index = len(self.output)
        if self.text is None:
            self.text = []
            out += self._event("response.output_item.added", output_index=index,
                               item=_message_item(self._msg_id(), "", "in_progress"))
            out += self._event("response.content_part.added", item_id=self._msg_id(), output_index=index,
                               content_index=0, part={"type": "output_text", "text": "", "annotations": []})
        self.text.append(content)
        return out + self._event("response.output_text.delta", item_id=self._msg_id(), output_index=index,
                                 content_index=0, delta=content, logprobs=[])

    def _msg_id(self) -> str:
        return f"msg_{self.trace.id}_{len(self.output)}"

    def _tool_call(self, tc: dict[str, Any]) -> bytes:
        out = b""
        index = tc.get("index", 0)
        function = tc.get("function") or {}
        if self.call is None or index != self.call_index:
            out += self._close_text() + self._close_call()
            self.call_index = index
            self.call = _call_item(f"fc_{self.trace.id}_{len(self.output)}", tc.get("id") or "",
                                   function.get("name") or "", "", "in_progress")
            out += self._event("response.output_item.added", output_index=len(self.output), item=dict(self.call))
        arguments = function.get("arguments")
        if arguments:
            self.call["arguments"] += arguments
            out += self._event("response.function_call_arguments.delta", item_id=self.call["id"],
                               output_index=len(self.output), delta=arguments)
        return out

    def _close_text(self) -> bytes:
        if self.text is None:
            return b""
        text, index, item_id = "".join(self.text), len(self.output), self._msg_id()
        self.text = None
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item = _message_item(item_id, text)
        self.output.append(item)
        return (self._event("response.output_text.done", item_id=item_id, output_index=index, content_index=0,
                            text=text, logprobs=[])
                + self._event("response.content_part.done", item_id=item_id, output_index=index, content_index=0,
                              part=part)
                + self._event("response.output_item.done", output_index=index, item=item))

    def _close_call(self) -> bytes:
        if self.call is None:
            return b""
        call, index = self.call, len(self.output)
        self.call = None
        call["status"] = "completed"
        self.output.append(call)
        return (self._event("response.function_call_arguments.done", item_id=call["id"], output_index=index,
                            name=call["name"], arguments=call["arguments"])
                + self._event("response.output_item.done", output_index=index, item=call))

    def error(self, e: UpstreamError) -> bytes:
        self.failed = True
        failed = _response(self.trace, self.request, self.model, "failed", self.output, None)
        failed["error"] = {"code": "rate_limit_exceeded" if e.status == 429 else "server_error", "message": e.message}
        return (self._event("error", code=e.code or e.type, message=e.message, param=None)
                + self._event("response.failed", response=failed))

    def tail(self, trace: Trace, model: str, usage: Usage) -> bytes:
        if self.failed:
            return b""
        out = self._close_text() + self._close_call()
        done = _response(trace, self.request, self.model, "completed", self.output, usage_json(usage), self.finish)
        return out + cost_comment(trace, model) + self._event("response.incomplete" if done["status"] == "incomplete" else "response.completed",
                                 response=done)


class ResponsesDialect(Dialect):
    """OpenAI's Responses API, stateless, over any upstream's chat completions."""

    kind = "responses"
    paths = ("/v1/responses", "/responses")

    def parse(self, body: Any, headers: Any, client: str | None) -> ChatRequest:
        req = ChatRequest.from_http(to_chat(body), headers, client)
        req.native, req.api = body, self.kind
        return req

    def render(self, completion: Completion, request: ChatRequest, trace: Trace) -> bytes:
        body = completion.body
        choice = (body.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        output: list[dict[str, Any]] = []
        text = message.get("content")
        if text or not message.get("tool_calls"):
            output.append(_message_item(f"msg_{trace.id}_0", text or ""))
        for tc in message.get("tool_calls") or ():
            function = tc.get("function") or {}
            output.append(_call_item(f"fc_{trace.id}_{len(output)}", tc.get("id") or "", function.get("name") or "",
                                     function.get("arguments") or ""))
        doc = _response(trace, request, str(body.get("model") or request.model), "completed", output,
                        usage_json(completion.usage, _cached(body)), choice.get("finish_reason"))
        return dumps(doc)

    def streamer(self, request: ChatRequest, trace: Trace) -> StreamRender:
        return ResponsesStream(request, trace)
