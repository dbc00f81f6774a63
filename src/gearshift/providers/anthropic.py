"""Anthropic Messages API (`POST {base_url}/v1/messages`), translated to and from OpenAI's format.

Clients speak OpenAI chat-completions to gearshift; this adapter turns a request into a Messages
request (system prompt, merged roles, content blocks, tools) and turns the answer (or the stream
of Anthropic events) back into `chat.completion` / `chat.completion.chunk` dicts.

`response_format` (JSON object or JSON schema) has no Messages API field that every Claude model
takes, so it becomes a forced tool call whose input schema is the requested schema, and the tool's
input comes back as the message content: the client gets JSON text, as from OpenAI. When the
request also has tools of its own, or extended thinking (which forced tool use excludes), the
schema goes into the system prompt instead.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gearshift.errors import UpstreamError
from gearshift.jsonfast import JSONDecodeError, dumps, loads
from gearshift.providers.base import Completion, Provider, Stream, Usage
from gearshift.providers.http import (
    JSON_CONTENT,
    SessionOwner,
    SSEStream,
    bad_body,
    event_error,
    post_whole,
    timeouts,
    traced,
)
from gearshift.request import ChatRequest, content_text, strip_metadata

if TYPE_CHECKING:
    import aiohttp

    from gearshift.config import ModelConfig

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI clients usually leave it out

FINISH_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter",
}


JSON_TOOL = "json_response"  # the forced tool that carries a response_format answer
# Extended thinking's blocks: carried in OpenAI form as the message's (or delta's) `thinking_blocks`, as
# other gateways do, so a Messages client gets them back signed (Claude wants them again with tool results).
THINKING = ("thinking", "redacted_thinking")
# The choice's field naming the stop sequence that ended an answer: vLLM's, which Claude's stop_sequence fills.
STOP_STRING = "stop_reason"


class TranslationError(UpstreamError):
    """The OpenAI request uses something the Messages API cannot express (the client must change it)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, status=400, retryable=False)
        self.type = "invalid_request_error"
        self.param = param
        if param is not None:
            self.code = "unsupported_parameter"


# OpenAI request keys this adapter translates (or, for stream_options, handles itself).
TRANSLATED = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "thinking",
    "stop", "user", "tools", "tool_choice", "parallel_tool_calls", "response_format", "stream",
    "stream_options", "n", "metadata"})
# Values that ask for nothing (OpenAI's defaults): sending them is not using the parameter.
_UNUSED = {"logprobs": False, "frequency_penalty": 0, "presence_penalty": 0, "store": False, "top_logprobs": 0}


class Params:
    """What the translation could not carry: a 400 naming it, or with `drop` a note of what was dropped
    (sent to the client as x-gearshift-dropped-params)."""

    def __init__(self, model_name: str, drop: bool) -> None:
        self.name, self.drop = model_name, drop
        self.dropped: list[str] = []

    def lose(self, param: str, why: str) -> None:
        """Drop `param` when allowed, else refuse the request naming it."""
        if not self.drop:
            raise TranslationError(f"model {self.name!r} (Anthropic) {why}; change the request, or set "
                                   f"`drop_params: true` on the model to drop it", param=param)
        if param not in self.dropped:
            self.dropped.append(param)


# ---------------------------------------------------------------- OpenAI request -> Anthropic request


def to_anthropic(body: dict[str, Any], upstream_id: str, model_name: str = "",
                 params: Params | None = None) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat-completions body. What it cannot carry is refused
    (TranslationError naming the parameter), or dropped and noted in `params` when it allows."""
    name = model_name or upstream_id
    params = params or Params(name, drop=False)
    for key, value in body.items():
        if key not in TRANSLATED and value is not None and _UNUSED.get(key, ...) != value:
            params.lose(key, f"does not support `{key}`")
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role in ("system", "developer"):
            text = content_text(m.get("content"))
            if text:
                system.append(text)
            continue
        if role == "user":
            blocks = _user_blocks(m.get("content"), name)
            out_role = "user"
        elif role == "assistant":
            blocks = _assistant_blocks(m, name)
            out_role = "assistant"
        elif role in ("tool", "function"):
            blocks = [_tool_result(m, name)]
            out_role = "user"  # Anthropic returns tool results inside the next user turn
        else:
            raise TranslationError(f"model {name!r} (Anthropic) cannot take a message with role {role!r}")
        if not blocks:
            continue
        if messages and messages[-1]["role"] == out_role:  # Anthropic wants strictly alternating roles
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": out_role, "content": blocks})

    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError(f"model {name!r} (Anthropic) answers one choice per request; `n` must be 1, got {n!r}",
                               param="n")
    out: dict[str, Any] = {"model": upstream_id, "messages": messages}
    if system:
        out["system"] = "\n\n".join(system)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = int(max_tokens) if max_tokens else DEFAULT_MAX_TOKENS
    temperature = body.get("temperature")
    if temperature is not None:
        clamped = min(max(float(temperature), 0.0), 1.0)  # OpenAI allows up to 2, Anthropic up to 1
        if clamped != float(temperature):
            params.lose("temperature", f"takes temperature from 0 to 1, got {temperature!r}")
        out["temperature"] = clamped
    for key in ("top_p", "top_k", "thinking"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        seqs = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)]
        if any(not s.strip() for s in seqs):  # Anthropic rejects whitespace-only stop sequences
            params.lose("stop", "does not take whitespace-only stop sequences")
        seqs = [s for s in seqs if s.strip()]
        if seqs:
            out["stop_sequences"] = seqs
    user = body.get("user")
    meta = body.get("metadata")  # what is left once gearshift's routing hints are stripped
    if isinstance(meta, dict) and meta:
        if set(meta) - {"user_id"}:
            params.lose("metadata", "takes only `user_id` in metadata")
        user = meta.get("user_id") or user
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    raw_tools = body.get("tools")
    tools = _tools(raw_tools)
    if isinstance(raw_tools, list) and len(tools) < len(raw_tools):
        params.lose("tools", "takes only tools of type `function`")
    if tools:
        out["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice:
            out["tool_choice"] = choice
    fmt = json_format(body, name)
    if fmt is not None:
        if fmt.forced_tool:
            out["tools"] = [fmt.tool()]
            out["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
        else:
            out["system"] = "\n\n".join([*system, fmt.instruction()])
    if body.get("stream"):
        out["stream"] = True
    return out


def _user_blocks(content: Any, name: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        return [{"type": "text", "text": str(content)}]
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            blocks.append({"type": "text", "text": part})
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), name))
        else:
            raise TranslationError(f"model {name!r} (Anthropic) cannot take content parts of type {kind!r}")
    return blocks


def _image(image: Any, name: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise TranslationError(f"model {name!r}: an image_url part has no url")
    if url.startswith("data:"):
        # data:image/png;base64,AAAA
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise TranslationError(f"model {name!r} (Anthropic) takes images as base64 data URLs or http(s) URLs")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type or "image/png", "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(m: dict[str, Any], name: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = content_text(m.get("content"))
    if text:  # Anthropic rejects empty text blocks
        blocks.append({"type": "text", "text": text})
    for call in m.get("tool_calls") or []:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = loads(args) if args.strip() else {}
            except JSONDecodeError:
                raise TranslationError(f"model {name!r}: tool call {call.get('id')!r} has arguments that "
                                       "are not valid JSON") from None
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                       "input": args if isinstance(args, dict) else {}})
    return blocks


def _tool_result(m: dict[str, Any], name: str) -> dict[str, Any]:
    content = m.get("content")
    # A tool's images (a screenshot, a chart) travel as blocks; text alone as a string.
    images = isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image_url" for p in content)
    return {"type": "tool_result", "tool_use_id": m.get("tool_call_id") or m.get("name"),
            "content": _user_blocks(content, name) if images else content_text(content)}


@dataclass(frozen=True)
class JsonFormat:
    """A request's `response_format` asking for JSON, and how it is asked of Claude."""

    schema: dict[str, Any] | None  # None: any JSON object (json_object)
    description: str
    forced_tool: bool  # False: by the system prompt (the request has tools of its own, or thinking)

    @property
    def wrapped(self) -> bool:
        """A tool's input must be an object: a schema of another type travels as {"value": ...}."""
        return self.schema is not None and self.schema.get("type", "object") != "object"

    def tool(self) -> dict[str, Any]:
        schema = self.schema or {"type": "object"}
        if self.wrapped:
            schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
        return {"name": JSON_TOOL, "input_schema": schema,
                "description": self.description or "Give the answer as this JSON."}

    def instruction(self) -> str:
        if self.schema is None:
            return "When you answer (rather than call a tool), answer with one JSON object only: no prose, no code fence."
        return ("When you answer (rather than call a tool), answer with JSON only, no prose and no code fence, "
                f"valid against this JSON schema: {dumps(self.schema).decode()}")

    def content(self, tool_input: Any) -> str:
        """The message content for the forced tool's input."""
        value = tool_input.get("value") if self.wrapped and isinstance(tool_input, dict) else tool_input
        return dumps(value if value is not None else {}).decode()


def json_format(body: dict[str, Any], name: str = "") -> JsonFormat | None:
    """The JSON the request asks for with `response_format`, or None (no response_format, or type text)."""
    rf = body.get("response_format")
    if rf is None:
        return None
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "text":
        return None
    forced = not body.get("tools") and not body.get("thinking")
    if kind == "json_object":
        return JsonFormat(None, "", forced)
    if kind == "json_schema":
        spec = rf.get("json_schema")
        spec = spec if isinstance(spec, dict) else {}
        schema = spec.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise TranslationError(f"model {name!r} (Anthropic): response_format.json_schema.schema must be "
                                   "a JSON Schema object")
        return JsonFormat(schema or {"type": "object"}, str(spec.get("description") or ""), forced)
    raise TranslationError(f"model {name!r} (Anthropic): response_format type {kind!r} is not one of "
                           "text, json_object, json_schema")


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for t in tools or []:
        if not isinstance(t, dict) or t.get("type") != "function":
            continue
        fn = t.get("function") or {}
        tool: dict[str, Any] = {"name": fn.get("name"),
                                "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
        if fn.get("description"):
            tool["description"] = fn["description"]
        out.append(tool)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        out = None
    if parallel is False and (out is None or out["type"] != "none"):
        out = out or {"type": "auto"}
        out["disable_parallel_tool_use"] = True
    return out


def native_body(body: dict[str, Any], upstream_id: str, stream: bool) -> dict[str, Any]:
    """A client's own Messages API body, for this upstream: its model id, and of its metadata only
    `user_id` (the rest are gearshift's routing hints, never sent upstream)."""
    out = {**body, "model": upstream_id}
    meta = out.pop("metadata", None)
    if isinstance(meta, dict) and meta.get("user_id") is not None:
        out["metadata"] = {"user_id": meta["user_id"]}
    if stream:
        out["stream"] = True
    else:
        out.pop("stream", None)
    return out


# ---------------------------------------------------------------- Anthropic answer -> OpenAI answer


def from_anthropic(doc: dict[str, Any], created: int | None = None, fmt: JsonFormat | None = None) -> dict[str, Any]:
    """The OpenAI `chat.completion` for a Messages API answer (`fmt`: the request's forced JSON tool)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    json_answer: str | None = None
    for block in doc.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind in THINKING:
            thinking.append(block)
        elif kind == "tool_use" and fmt is not None and fmt.forced_tool and block.get("name") == JSON_TOOL:
            json_answer = fmt.content(block.get("input"))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": dumps(block.get("input") or {}).decode()}})
    stop = doc.get("stop_reason")
    if json_answer is not None:
        texts, stop = [json_answer], "end_turn"  # the forced tool call is the answer, not a call to make
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["thinking_blocks"] = thinking
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": FINISH_REASONS.get(str(stop), "stop"),
                              "logprobs": None}
    if stop == "stop_sequence" and isinstance(doc.get("stop_sequence"), str):
        choice[STOP_STRING] = doc["stop_sequence"]
    return {
        "id": doc.get("id") or "",
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": doc.get("model") or "",
        "choices": [choice],
        "usage": openai_usage(doc.get("usage") or {}),
    }


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage -> OpenAI usage. Cache reads and writes are input tokens too."""
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + int(usage.get("cache_creation_input_tokens") or 0) + cached
    completion = int(usage.get("output_tokens") or 0)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


# ---------------------------------------------------------------- provider


class AnthropicProvider(Provider):
    """One Claude model behind the Anthropic Messages API."""

    kind = "anthropic"
    default_base_url = "https://api.anthropic.com"

    def __init__(self, model: ModelConfig, session: aiohttp.ClientSession | None, base_dir: str = ".") -> None:
        super().__init__(model, session, base_dir)
        base = (model.base_url or self.default_base_url).rstrip("/")
        self._url = base + "/messages" if base.endswith("/v1") else base + "/v1/messages"
        self._timeout, self._stream_timeout = timeouts(model)
        self._sessions = SessionOwner(session)
        self._static_headers = {"Content-Type": JSON_CONTENT, "anthropic-version": API_VERSION, **model.headers}

    def _headers(self) -> tuple[dict[str, str], str | None]:
        key = self.model.api_key()
        if not key:
            return traced(self._static_headers), None
        headers = dict(self._static_headers)
        headers["x-api-key"] = key
        return traced(headers), key

    def _body(self, request: ChatRequest, stream: bool) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The Messages API body and the parameters dropped from it (with `drop_params`)."""
        if request.api == "messages" and request.native is not None:
            return native_body(request.native, self.model.upstream_id, stream), ()
        source = request.body
        if "metadata" in source:  # routing hints never go upstream
            source = dict(source)
            strip_metadata(source, self.model.forward_metadata, self.routing_keys)
        params = Params(self.model.name or self.model.upstream_id, self.model.drop_params)
        body = to_anthropic(source, self.model.upstream_id, self.model.name, params)
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return body, tuple(params.dropped)

    async def complete(self, request: ChatRequest) -> Completion:
        body, dropped = self._body(request, stream=False)
        headers, key = self._headers()
        doc, _ = await post_whole(self._sessions, self.model, self._url, body, headers, key, self._timeout)
        if not isinstance(doc, dict) or doc.get("type") == "error":
            if isinstance(doc, dict):
                raise event_error(self.model, doc.get("error"), key)
            raise bad_body(self.model, "not a Messages API answer")
        out = from_anthropic(doc, fmt=json_format(request.body, self.model.name))
        u = out["usage"]
        return Completion(out, Usage(u["prompt_tokens"], u["completion_tokens"]), dropped=dropped)

    def stream(self, request: ChatRequest) -> Stream:
        body, dropped = self._body(request, stream=True)
        options = request.body.get("stream_options")
        client_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        headers, key = self._headers()
        s = _AnthropicStream(self.model, self._sessions, request, self._url, body, headers, key,
                             self._stream_timeout, client_usage)
        s.dropped = dropped
        return s

    async def close(self) -> None:
        await self._sessions.close()


class _AnthropicStream(SSEStream):
    """Anthropic events -> OpenAI chunks: role first, content and tool-call deltas, finish, usage."""

    def __init__(self, model: ModelConfig, sessions: SessionOwner, request: ChatRequest, url: str,
                 body: dict[str, Any], headers: dict[str, str], secret: str | None,
                 timeout: aiohttp.ClientTimeout, client_usage: bool) -> None:
        super().__init__(model, sessions, request, url, body, headers, secret, timeout)
        self._client_usage = client_usage
        fmt = json_format(request.body, model.name)
        self._json = fmt if fmt is not None and fmt.forced_tool else None

    async def _translate(self, events: AsyncIterator[tuple[str, bytes]]) -> AsyncGenerator[dict[str, Any], None]:
        msg_id, model, created = "", "", int(time.time())
        usage: dict[str, Any] = {}
        tools: dict[int, int] = {}  # Anthropic content-block index -> OpenAI tool_calls index
        finished = False
        # response_format through the forced JSON tool: its input deltas are the content; text
        # outside it is held back, and sent only if no JSON tool call comes.
        json_block: int | None = None
        json_parts: list[str] = []
        held: list[str] = []

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"id": msg_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

        async for event, data in events:
            ev = loads(data)
            if not isinstance(ev, dict):
                continue
            kind = ev.get("type") or event
            if kind == "content_block_delta":
                delta = ev.get("delta") or {}
                dkind = delta.get("type")
                if dkind == "text_delta":
                    text = delta.get("text", "")
                    if text and self._json is not None:
                        held.append(text)
                    elif text:
                        self._parts.append(text)
                        yield chunk({"content": text})
                elif dkind == "input_json_delta" and json_block is not None and ev.get("index") == json_block:
                    piece = delta.get("partial_json", "")
                    json_parts.append(piece)
                    if piece and self._json is not None and not self._json.wrapped:
                        self._parts.append(piece)
                        yield chunk({"content": piece})
                elif dkind == "input_json_delta":
                    idx = tools.get(ev.get("index", -1))
                    if idx is not None:
                        yield chunk({"tool_calls": [{"index": idx, "function": {
                            "arguments": delta.get("partial_json", "")}}]})
                elif dkind == "thinking_delta" and delta.get("thinking"):
                    yield chunk({"thinking_blocks": [{"type": "thinking", "thinking": delta["thinking"]}]})
                elif dkind == "signature_delta" and delta.get("signature"):
                    yield chunk({"thinking_blocks": [{"type": "thinking", "thinking": "",
                                                      "signature": delta["signature"]}]})
            elif kind == "message_start":
                msg = ev.get("message") or {}
                msg_id, model = msg.get("id") or "", msg.get("model") or ""
                usage.update(msg.get("usage") or {})
                self._note(usage)
                yield chunk({"role": "assistant", "content": ""})
            elif kind == "content_block_start":
                block = ev.get("content_block") or {}
                if self._json is not None and block.get("type") == "tool_use" and block.get("name") == JSON_TOOL:
                    json_block = ev.get("index", -1)
                elif block.get("type") == "tool_use":
                    idx = tools[ev.get("index", len(tools))] = len(tools)
                    yield chunk({"tool_calls": [{"index": idx, "id": block.get("id"), "type": "function",
                                                 "function": {"name": block.get("name"), "arguments": ""}}]})
                elif block.get("type") == "redacted_thinking":
                    yield chunk({"thinking_blocks": [block]})
                elif block.get("type") == "thinking" and block.get("thinking"):
                    yield chunk({"thinking_blocks": [{"type": "thinking", "thinking": block["thinking"]}]})
                elif block.get("type") == "text" and block.get("text"):
                    if self._json is not None:
                        held.append(block["text"])
                    else:
                        self._parts.append(block["text"])
                        yield chunk({"content": block["text"]})
            elif kind == "message_delta":
                # usage here is cumulative (output_tokens, sometimes input_tokens too)
                usage.update({k: v for k, v in (ev.get("usage") or {}).items() if v is not None})
                self._note(usage)
                stop = (ev.get("delta") or {}).get("stop_reason")
                if stop and self._json is not None:
                    late = self._json_tail(json_block, json_parts, held)
                    if late:
                        self._parts.append(late)
                        yield chunk({"content": late})
                    if json_block is not None and stop == "tool_use":
                        stop = "end_turn"
                if stop:
                    finished = True
                    done = chunk({}, FINISH_REASONS.get(stop, "stop"))
                    seq = (ev.get("delta") or {}).get("stop_sequence")
                    if stop == "stop_sequence" and isinstance(seq, str):
                        done["choices"][0][STOP_STRING] = seq
                    yield done
            elif kind == "message_stop":
                break
            elif kind == "error":
                raise event_error(self.model, ev.get("error"), self._secret)
            # ping, content_block_stop and unknown future events: nothing to send
        else:
            if not finished:
                raise bad_body(self.model, "the stream ended before message_stop")
        if self._client_usage:
            yield {"id": msg_id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [], "usage": openai_usage(usage)}

    def _json_tail(self, block: int | None, parts: list[str], held: list[str]) -> str:
        """Content still owed at the end of a JSON-tool stream: the unwrapped value, or the held text."""
        assert self._json is not None
        if block is None:
            return "".join(held)  # no JSON tool call came (a refusal, say): the text is the answer
        if not self._json.wrapped:
            return ""  # already streamed as it came
        raw = "".join(parts)
        try:
            return self._json.content(loads(raw.encode() or b"{}"))
        except JSONDecodeError:
            return raw  # cut short (max_tokens): pass on what came; the finish reason says "length"

    def _note(self, usage: dict[str, Any]) -> None:
        # Kept current so a stream the client abandons still has the upstream's counts so far.
        u = openai_usage(usage)
        self._reported = (u["prompt_tokens"], u["completion_tokens"])
