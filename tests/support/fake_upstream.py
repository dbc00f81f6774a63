"""A fake LLM upstream on 127.0.0.1 that speaks OpenAI chat-completions and Anthropic Messages.

Real sockets, real SSE, deterministic answers ("echo: <last user text>") with realistic token
counts, and a script of failures tests can queue: an error status, a delay, a reset connection,
a stream that drops or stalls after some chunks, an error event inside a stream.

    with FakeUpstream.running() as up:          # background thread with its own event loop
        up.fail(500, times=2, model="cheap")    # the next two requests for `cheap` get HTTP 500
        ... call up.openai_url / up.anthropic_url ...
        assert up.requests[-1].headers["authorization"] == "Bearer sk-test"

    async with FakeUpstream() as up: ...        # or inside a running event loop

Run it alone with `python tests/fake_upstream.py --port 9000` for manual experiments.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                         404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                         500: "api_error", 529: "overloaded_error"}
OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                      429: "rate_limit_exceeded"}


def fake_tokens(text: str) -> int:
    """Deterministic token count: ~4 characters a token, at least one for non-empty text."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                if part.get("type") == "text":
                    out.append(str(part.get("text", "")))
                elif part.get("type") == "tool_result":
                    out.append(_text(part.get("content")))
        return "\n".join(out)
    return str(content)


def _words(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*", text) or [text]


@dataclass
class Behaviour:
    """One scripted answer.

    kind: ok | fail | delay | reset | drop | stall | error_event | raw
    times: how many requests it applies to (None: every request from now on).
    ok/delay also take `text` (instead of the echo) and `usage=False` (omit usage, as some servers do).
    """

    kind: str = "ok"
    times: int | None = 1
    status: int = 500
    message: str | None = None
    error_type: str | None = None
    seconds: float = 0.0
    after: int = 1  # drop / stall / error_event: content chunks sent first
    text: str | None = None
    usage: bool = True
    headers: dict[str, str] | None = None  # fail: response headers (default for 429: retry-after 1)
    body: bytes = b""  # raw: the body sent as it is
    content_type: str = "application/json"  # raw: its content type
    logprob: float | None = None  # ok: each answer token's logprob when the request asks `logprobs: true`
    answer: Callable[[str], str] | None = None  # ok: the answer computed from the last user text


@dataclass
class Received:
    """A request the fake received. Header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    model: str | None = None


@dataclass
class _Answer:
    text: str
    finish: str  # OpenAI finish_reason
    stop_reason: str  # Anthropic stop_reason
    stop_sequence: str | None
    tool: dict[str, Any] | None
    prompt_tokens: int
    completion_tokens: int
    usage: bool


class FakeUpstream:
    """A real aiohttp server answering like an LLM upstream, with scriptable failures."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, models: tuple[str, ...] = ("fake-small", "fake-large"),
                 api_key: str | None = None) -> None:
        self.host = host
        self.port = port
        self.models = list(models)
        self.api_key = api_key  # when set, requests must carry it (Bearer or x-api-key)
        self.requests: list[Received] = []
        self._script: dict[str | None, list[Behaviour]] = {}
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._ids = itertools.count(1)

    # -- addresses ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_url(self) -> str:
        """base_url for an `openai` model."""
        return self.url + "/v1"

    @property
    def anthropic_url(self) -> str:
        """base_url for an `anthropic` model."""
        return self.url

    # -- script ------------------------------------------------------------------------------

    def script(self, *behaviours: Behaviour, model: str | None = None) -> FakeUpstream:
        """Queue behaviours for requests naming `model` (None: any model without its own script)."""
        with self._lock:
            self._script.setdefault(model, []).extend(behaviours)
        return self

    def fail(self, status: int = 500, times: int | None = 1, model: str | None = None, message: str | None = None,
             error_type: str | None = None, headers: dict[str, str] | None = None) -> FakeUpstream:
        """Answer HTTP `status` with the API's error JSON (and `headers`, e.g. {"retry-after": "30"};
        a 429 without them says `retry-after: 1`)."""
        return self.script(Behaviour("fail", times, status=status, message=message, error_type=error_type,
                                     headers=headers), model=model)

    def delay(self, seconds: float, times: int | None = 1, model: str | None = None, text: str | None = None) -> FakeUpstream:
        """Sleep before answering normally (to trigger read timeouts)."""
        return self.script(Behaviour("delay", times, seconds=seconds, text=text), model=model)

    def raw(self, body: bytes, status: int = 200, content_type: str = "application/json", times: int | None = 1,
            model: str | None = None) -> FakeUpstream:
        """Answer `body` as it is: invalid JSON under a JSON content type, a proxy's HTML error page..."""
        return self.script(Behaviour("raw", times, status=status, body=body, content_type=content_type), model=model)

    def reset(self, times: int | None = 1, model: str | None = None) -> FakeUpstream:
        """Close the connection without any response."""
        return self.script(Behaviour("reset", times), model=model)

    def drop(self, after: int = 1, times: int | None = 1, model: str | None = None) -> FakeUpstream:
        """Send the headers and `after` content chunks (part of the body when not streamed), then drop."""
        return self.script(Behaviour("drop", times, after=after), model=model)

    def stall(self, seconds: float, after: int = 1, times: int | None = 1, model: str | None = None) -> FakeUpstream:
        """Stream `after` content chunks, go silent for `seconds`, then finish."""
        return self.script(Behaviour("stall", times, seconds=seconds, after=after), model=model)

    def error_event(self, after: int = 0, times: int | None = 1, model: str | None = None,
                    error_type: str = "overloaded_error", message: str = "Overloaded") -> FakeUpstream:
        """A 200 stream that reports an error inside it after `after` content chunks."""
        return self.script(Behaviour("error_event", times, after=after, error_type=error_type, message=message),
                           model=model)

    def reply(self, text: str, times: int | None = 1, model: str | None = None, usage: bool = True) -> FakeUpstream:
        """Answer `text` instead of the echo (`usage=False`: report no usage, as some servers do)."""
        return self.script(Behaviour("ok", times, text=text, usage=usage), model=model)

    def answer_with(self, fn: Callable[[str], str], times: int | None = None, model: str | None = None) -> FakeUpstream:
        """Answer `fn(last user text)`: a model whose answers depend on the question (e.g. a judge that
        knows the truth)."""
        return self.script(Behaviour("ok", times, answer=fn), model=model)

    def confident(self, logprob: float, text: str | None = None, times: int | None = 1,
                  model: str | None = None) -> FakeUpstream:
        """Answer (`text`, or the echo) with every token at `logprob` when the request asks for logprobs
        (0 is certain; -2 is a 14% guess). Unscripted answers carry logprob -0.01 per token."""
        return self.script(Behaviour("ok", times, text=text, logprob=logprob), model=model)

    def clear(self) -> None:
        """Forget the script and the recorded requests."""
        with self._lock:
            self._script.clear()
            self.requests.clear()

    def count(self, model: str | None = None, path: str | None = None) -> int:
        """How many requests arrived (for a model, on a path)."""
        with self._lock:
            return sum(1 for r in self.requests if (model is None or r.model == model)
                       and (path is None or r.path == path))

    def _next(self, model: str | None) -> Behaviour:
        with self._lock:
            for key in (model, None):
                queue = self._script.get(key)
                if queue:
                    b = queue[0]
                    if b.times is not None:
                        b.times -= 1
                        if b.times <= 0:
                            queue.pop(0)
                    return b
        return Behaviour("ok", None)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/models", self._models)
        # handler_cancellation: a client that gives up (timeout) ends the sleeping handler too.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @classmethod
    @contextlib.contextmanager
    def running(cls, **kwargs: Any) -> Iterator[FakeUpstream]:
        """Run a fake upstream in a background thread with its own event loop."""
        up = cls(**kwargs)
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(up.start())
            except BaseException as e:  # report to the caller's thread
                failure.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(up.stop())
            loop.close()

        thread = threading.Thread(target=serve, name="fake-upstream", daemon=True)
        thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        try:
            yield up
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)

    # -- recording ---------------------------------------------------------------------------

    async def _receive(self, request: web.Request) -> tuple[Any, Received]:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        model = body.get("model") if isinstance(body, dict) else None
        rec = Received(request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, body,
                       model if isinstance(model, str) else None)
        with self._lock:
            self.requests.append(rec)
        return body, rec

    # -- behaviours shared by both APIs ------------------------------------------------------

    async def _scripted(self, request: web.Request, b: Behaviour, error: Any) -> web.StreamResponse | None:
        """Apply the behaviours that do not depend on the API; None means answer normally."""
        if b.kind == "fail":
            headers = b.headers if b.headers is not None else {"retry-after": "1"} if b.status == 429 else {}
            return web.Response(status=b.status, body=orjson.dumps(error(b)), headers=headers,
                                content_type="application/json")
        if b.kind == "raw":
            return web.Response(status=b.status, body=b.body, headers={"Content-Type": b.content_type})
        if b.kind == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if b.kind == "delay":
            await asyncio.sleep(b.seconds)
        return None

    async def _drop_whole(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """A non-streamed answer whose connection dies half way through the body."""
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": str(len(body))})
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        assert request.transport is not None
        request.transport.abort()
        return resp

    # -- OpenAI ------------------------------------------------------------------------------

    def _check_key(self, headers: dict[str, str], anthropic: bool) -> str | None:
        """The rejected key (echoed like a careless upstream would), or None when it is fine."""
        if self.api_key is None:
            return None
        got = headers.get("x-api-key", "") if anthropic else headers.get("authorization", "").removeprefix("Bearer ")
        return None if got == self.api_key else got

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body, rec = await self._receive(request)
        bad = self._check_key(rec.headers, anthropic=False)
        if bad is not None:
            return _json({"error": {"message": f"Incorrect API key provided: {bad}", "type": "invalid_request_error",
                                    "param": None, "code": "invalid_api_key"}}, 401)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return _json({"error": {"message": "'messages' is a required property", "type": "invalid_request_error",
                                    "param": "messages", "code": None}}, 400)
        b = self._next(rec.model)

        def error(b: Behaviour) -> dict[str, Any]:
            return {"error": {"message": b.message or f"scripted failure {b.status}",
                              "type": b.error_type or OPENAI_ERROR_TYPES.get(b.status, "server_error"),
                              "param": None, "code": None}}

        early = await self._scripted(request, b, error)
        if early is not None:
            return early
        ans = self._answer_openai(body, b)
        cid = f"chatcmpl-fake{next(self._ids)}"
        created = int(time.time())
        model = body.get("model", "")
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": ans.text if not ans.tool else None}
            if ans.tool:
                message["tool_calls"] = [{"id": ans.tool["id"], "type": "function", "function": {
                    "name": ans.tool["name"], "arguments": orjson.dumps(ans.tool["input"]).decode()}}]
            doc: dict[str, Any] = {"id": cid, "object": "chat.completion", "created": created, "model": model,
                                   "system_fingerprint": "fp_fake",
                                   "choices": [{"index": 0, "message": message,
                                                "logprobs": _openai_logprobs(body, ans, b),
                                                "finish_reason": ans.finish}]}
            if ans.usage:
                doc["usage"] = _openai_usage(ans)
            if b.kind == "drop":
                return await self._drop_whole(request, orjson.dumps(doc))
            if b.kind == "stall":
                await asyncio.sleep(b.seconds)
            return _json(doc)

        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage")) and ans.usage
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_fake"}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            c: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                      "finish_reason": finish}]}
            if include_usage:
                c["usage"] = None  # as OpenAI does: every chunk but the last carries usage: null
            return b"data: " + orjson.dumps(c) + b"\n\n"

        pieces: list[bytes] = []
        if ans.tool:
            args = orjson.dumps(ans.tool["input"]).decode()
            pieces.append(chunk({"role": "assistant", "content": None, "tool_calls": [{
                "index": 0, "id": ans.tool["id"], "type": "function",
                "function": {"name": ans.tool["name"], "arguments": ""}}]}))
            pieces += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 8]}}]})
                       for i in range(0, len(args), 8)]
        else:
            pieces.append(chunk({"role": "assistant", "content": ""}))
            pieces += [chunk({"content": w}) for w in _words(ans.text)]
        pieces.append(chunk({}, ans.finish))
        if include_usage:
            pieces.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": _openai_usage(ans)}) + b"\n\n")
        pieces.append(b"data: [DONE]\n\n")

        def error_piece(b: Behaviour) -> bytes:
            return b"data: " + orjson.dumps({"error": {"message": b.message, "type": b.error_type,
                                                       "param": None, "code": None}}) + b"\n\n"

        return await self._stream(request, pieces, b, error_piece)

    def _answer_openai(self, body: dict[str, Any], b: Behaviour) -> _Answer:
        messages = body["messages"]
        prompt_tokens = sum(fake_tokens(_text(m.get("content"))) + 4 for m in messages if isinstance(m, dict))
        tool = None
        choice = body.get("tool_choice")
        tools = [t.get("function", {}) for t in body.get("tools") or [] if isinstance(t, dict)]
        # `auto` calls a tool the last (user) message asks for by "use <name>", as an agent's model would.
        asked = [t.get("name") for t in tools if choice in (None, "auto") and isinstance(messages[-1], dict)
                 and messages[-1].get("role") == "user" and f"use {t.get('name')}" in _last_user(messages)]
        if tools and (choice == "required" or isinstance(choice, dict) or asked):
            name = choice["function"]["name"] if isinstance(choice, dict) else (asked or [tools[0].get("name")])[0]
            tool = {"id": f"call_fake{next(self._ids)}", "name": name, "input": {"query": _last_user(messages)}}
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        return _answer(messages, b, prompt_tokens, tool, max_tokens, stops)

    # -- Anthropic ---------------------------------------------------------------------------

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body, rec = await self._receive(request)
        bad = self._check_key(rec.headers, anthropic=True)
        if bad is not None:
            return _anthropic_error(401, "authentication_error", f"invalid x-api-key: {bad}")
        if "anthropic-version" not in rec.headers:
            return _anthropic_error(400, "invalid_request_error", "anthropic-version: header is required")
        problem = _validate_anthropic(body)
        if problem:
            return _anthropic_error(400, "invalid_request_error", problem)
        b = self._next(rec.model)

        def error(b: Behaviour) -> dict[str, Any]:
            return {"type": "error", "error": {"type": b.error_type or ANTHROPIC_ERROR_TYPES.get(b.status, "api_error"),
                                               "message": b.message or f"scripted failure {b.status}"}}

        early = await self._scripted(request, b, error)
        if early is not None:
            return early
        ans = self._answer_anthropic(body, b)
        mid = f"msg_fake{next(self._ids)}"
        model = body.get("model", "")
        content: list[dict[str, Any]] = []
        thinking = _thinking(body)
        if thinking:  # extended thinking: a signed thinking block first, as Claude answers
            content.append({"type": "thinking", "thinking": thinking, "signature": "sig-fake"})
        if ans.text:
            content.append({"type": "text", "text": ans.text})
        if ans.tool:
            content.append({"type": "tool_use", **ans.tool})
        usage = {"input_tokens": ans.prompt_tokens, "output_tokens": ans.completion_tokens,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        if not body.get("stream"):
            doc = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
                   "stop_reason": ans.stop_reason, "stop_sequence": ans.stop_sequence, "usage": usage}
            if b.kind == "drop":
                return await self._drop_whole(request, orjson.dumps(doc))
            return _json(doc)

        def ev(kind: str, data: dict[str, Any]) -> bytes:
            return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"

        pieces = [ev("message_start", {"message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}})]
        index = 0
        if thinking:
            pieces.append(ev("content_block_start", {"index": index, "content_block": {
                "type": "thinking", "thinking": "", "signature": ""}}))
            pieces.append(ev("content_block_delta", {"index": index, "delta": {"type": "thinking_delta",
                                                                               "thinking": thinking}}))
            pieces.append(ev("content_block_delta", {"index": index, "delta": {"type": "signature_delta",
                                                                               "signature": "sig-fake"}}))
            pieces.append(ev("content_block_stop", {"index": index}))
            index += 1
        if ans.text:
            pieces.append(ev("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}))
            pieces.append(ev("ping", {}))
            pieces += [ev("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": w}})
                       for w in _words(ans.text)]
            pieces.append(ev("content_block_stop", {"index": index}))
            index += 1
        if ans.tool:
            args = orjson.dumps(ans.tool["input"]).decode()
            pieces.append(ev("content_block_start", {"index": index, "content_block": {
                "type": "tool_use", "id": ans.tool["id"], "name": ans.tool["name"], "input": {}}}))
            pieces += [ev("content_block_delta", {"index": index, "delta": {
                "type": "input_json_delta", "partial_json": args[i:i + 8]}}) for i in range(0, len(args), 8)]
            pieces.append(ev("content_block_stop", {"index": index}))
        pieces.append(ev("message_delta", {"delta": {"stop_reason": ans.stop_reason, "stop_sequence": ans.stop_sequence},
                                           "usage": {"output_tokens": ans.completion_tokens}}))
        pieces.append(ev("message_stop", {}))

        def error_piece(b: Behaviour) -> bytes:
            return ev("error", {"error": {"type": b.error_type, "message": b.message}})

        return await self._stream(request, pieces, b, error_piece)

    def _answer_anthropic(self, body: dict[str, Any], b: Behaviour) -> _Answer:
        messages = body["messages"]
        system = body.get("system")
        prompt_tokens = fake_tokens(_text(system)) + sum(fake_tokens(_text(m.get("content"))) + 4 for m in messages)
        tool = None
        choice = body.get("tool_choice") or {}
        tools = body.get("tools") or []
        if tools and choice.get("type") in ("any", "tool"):
            name = choice.get("name") if choice.get("type") == "tool" else tools[0].get("name")
            tool = {"id": f"toolu_fake{next(self._ids)}", "name": name,
                    "input": _scripted_input(b) or {"query": _last_user(messages)}}
        return _answer(messages, b, prompt_tokens, tool, body.get("max_tokens"), body.get("stop_sequences") or [])

    # -- streaming ---------------------------------------------------------------------------

    async def _stream(self, request: web.Request, pieces: list[bytes], b: Behaviour,
                      error_piece: Any) -> web.StreamResponse:
        """Write SSE pieces, applying drop / stall / error_event after `b.after` content pieces."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        # The first piece (OpenAI role chunk / Anthropic message_start) is not content.
        cut = 1 + b.after if b.kind in ("drop", "stall", "error_event") else None
        for i, piece in enumerate(pieces):
            if i == cut:
                if b.kind == "drop":
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                if b.kind == "stall":
                    await asyncio.sleep(b.seconds)
                if b.kind == "error_event":
                    await resp.write(error_piece(b))
                    await resp.write_eof()
                    return resp
            await resp.write(piece)
        await resp.write_eof()
        return resp

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """OpenAI embeddings: one deterministic 8-d unit vector per input (from its text's bytes)."""
        body, rec = await self._receive(request)
        value = body.get("input") if isinstance(body, dict) else None
        inputs = [value] if isinstance(value, str) else value if isinstance(value, list) else None
        if not inputs:
            return _json({"error": {"message": "'input' is a required property", "type": "invalid_request_error",
                                    "param": "input", "code": None}}, 400)
        b = self._next(rec.model)
        early = await self._scripted(request, b, lambda b: {"error": {
            "message": b.message or f"scripted failure {b.status}", "type": "server_error", "param": None, "code": None}})
        if early is not None:
            return early
        data, tokens = [], 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            tokens += fake_tokens(text) if isinstance(item, str) else len(item)
            raw = [((sum(text.encode()) * (k + 7)) % 97) - 48.0 for k in range(8)]
            norm = math.sqrt(sum(x * x for x in raw)) or 1.0
            data.append({"object": "embedding", "index": i, "embedding": [x / norm for x in raw]})
        return _json({"object": "list", "data": data, "model": body.get("model", ""),
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's Responses API, answering as chat completions would (the echo, tool calls), in its
        own shapes: a `response` object, or the event sequence when streamed."""
        body, rec = await self._receive(request)
        if not isinstance(body, dict) or body.get("input") in (None, "", []):
            return _json({"error": {"message": "Missing required parameter: 'input'.", "type": "invalid_request_error",
                                    "param": "input", "code": "missing_required_parameter"}}, 400)
        b = self._next(rec.model)
        early = await self._scripted(request, b, lambda b: {"error": {
            "message": b.message or f"scripted failure {b.status}", "type": "server_error", "param": None, "code": None}})
        if early is not None:
            return early
        items = body["input"]
        messages = [{"role": "system", "content": body["instructions"]}] if body.get("instructions") else []
        for item in [{"role": "user", "content": items}] if isinstance(items, str) else items:
            if item.get("type") == "function_call_output":
                messages.append({"role": "tool", "content": item.get("output")})
            elif item.get("role"):
                content = item.get("content")
                messages.append({"role": item["role"], "content": content if isinstance(content, str) else _text(
                    [{"type": "text", "text": p.get("text", "")} for p in content])})
        tools = [{"type": "function", "function": t} for t in body.get("tools") or []]
        choice = body.get("tool_choice")
        chat = {"messages": messages, "tools": tools, "max_tokens": body.get("max_output_tokens"),
                "tool_choice": {"function": {"name": choice["name"]}} if isinstance(choice, dict) else choice}
        ans = self._answer_openai(chat, b)
        rid, n = f"resp_fake{next(self._ids)}", 0
        output: list[dict[str, Any]] = [{"id": f"rs_{rid}", "type": "reasoning", "summary": []}]
        if ans.tool:
            output.append({"id": f"fc_{rid}", "type": "function_call", "status": "completed", "call_id": ans.tool["id"],
                           "name": ans.tool["name"], "arguments": orjson.dumps(ans.tool["input"]).decode()})
        else:
            output.append({"id": f"msg_{rid}", "type": "message", "status": "completed", "role": "assistant",
                           "content": [{"type": "output_text", "text": ans.text, "annotations": []}]})
        incomplete = ans.finish == "length"
        doc = {"id": rid, "object": "response", "created_at": int(time.time()), "model": body.get("model", ""),
               "status": "incomplete" if incomplete else "completed",
               "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None, "output": output,
               "usage": {"input_tokens": ans.prompt_tokens, "output_tokens": ans.completion_tokens,
                         "total_tokens": ans.prompt_tokens + ans.completion_tokens}}
        if not body.get("stream"):
            return _json(doc)

        def ev(kind: str, **fields: Any) -> bytes:
            nonlocal n
            n += 1
            return f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, "sequence_number": n - 1,
                                                                     **fields}) + b"\n\n"

        item = output[1]
        pieces = [ev("response.created", response={**doc, "status": "in_progress", "output": []}),
                  ev("response.output_item.added", output_index=0, item=output[0]),
                  ev("response.output_item.done", output_index=0, item=output[0]),
                  ev("response.output_item.added", output_index=1, item={**item, "status": "in_progress", **(
                      {"arguments": ""} if ans.tool else {"content": []})})]
        if ans.tool:
            args = item["arguments"]
            pieces += [ev("response.function_call_arguments.delta", item_id=item["id"], output_index=1,
                          delta=args[i:i + 8]) for i in range(0, len(args), 8)]
        else:
            pieces += [ev("response.output_text.delta", item_id=item["id"], output_index=1, content_index=0, delta=w)
                       for w in _words(ans.text)]
        pieces += [ev("response.output_item.done", output_index=1, item=item),
                   ev("response.incomplete" if incomplete else "response.completed", response=doc)]

        def error_piece(b: Behaviour) -> bytes:
            return ev("error", code=b.error_type, message=b.message, param=None)

        return await self._stream(request, pieces, b, error_piece)

    async def _models(self, request: web.Request) -> web.Response:
        with self._lock:
            self.requests.append(Received(request.method, request.path,
                                          {k.lower(): v for k, v in request.headers.items()}, None))
        return _json({"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                                                 for m in self.models]})


# -- helpers ------------------------------------------------------------------------------------


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def _anthropic_error(status: int, kind: str, message: str) -> web.Response:
    return _json({"type": "error", "error": {"type": kind, "message": message}}, status)


def _last_user(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return _text(m.get("content"))
    return ""


def _answer(messages: list[Any], b: Behaviour, prompt_tokens: int, tool: dict[str, Any] | None,
            max_tokens: Any, stops: list[str]) -> _Answer:
    last = messages[-1] if messages else {}
    content = last.get("content") if isinstance(last, dict) else None
    is_result = isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "tool_result"
                                                  for p in content)
    if is_result or (isinstance(last, dict) and last.get("role") == "tool"):
        text = "echo: tool result: " + _text(content)
    else:
        text = "echo: " + _last_user(messages)
    if b.text is not None:
        text = b.text
    if b.answer is not None:
        text = b.answer(_last_user(messages))
    finish, stop_reason, stop_seq = "stop", "end_turn", None
    if tool:
        text = f"calling {tool['name']}"
        finish, stop_reason = "tool_calls", "tool_use"
    for s in stops:
        if s and s in text:
            text, finish, stop_reason, stop_seq = text[: text.index(s)], "stop", "stop_sequence", s
            break
    if max_tokens and fake_tokens(text) > int(max_tokens):
        text, finish, stop_reason = text[: int(max_tokens) * 4], "length", "max_tokens"
    return _Answer(text, finish, stop_reason, stop_seq, tool, prompt_tokens,
                   fake_tokens(text) + (8 if tool else 0), b.usage)


def _scripted_input(b: Behaviour) -> dict[str, Any] | None:
    """A forced tool call's input from a scripted reply that is a JSON object (e.g. a JSON-mode answer)."""
    try:
        doc = orjson.loads(b.text) if b.text else None
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _openai_logprobs(body: dict[str, Any], ans: _Answer, b: Behaviour) -> dict[str, Any] | None:
    """`choices[0].logprobs` as OpenAI returns it for `logprobs: true` (with `top_logprobs: n`): one
    entry per token (the answer's words here), each with its bytes and its n most likely alternatives."""
    if body.get("logprobs") is not True or ans.tool:
        return None
    lp = -0.01 if b.logprob is None else b.logprob
    n = int(body.get("top_logprobs") or 0)
    content = []
    for token in _words(ans.text) if ans.text else []:
        alts = [{"token": token, "logprob": lp, "bytes": list(token.encode())}]
        alts += [{"token": f"<alt{k}>", "logprob": lp - k, "bytes": list(f"<alt{k}>".encode())} for k in range(1, n)]
        content.append({"token": token, "logprob": lp, "bytes": list(token.encode()), "top_logprobs": alts[:n]})
    return {"content": content, "refusal": None}


def _openai_usage(ans: _Answer) -> dict[str, int]:
    return {"prompt_tokens": ans.prompt_tokens, "completion_tokens": ans.completion_tokens,
            "total_tokens": ans.prompt_tokens + ans.completion_tokens}


def _thinking(body: dict[str, Any]) -> str:
    """The fake's thinking when the request enables extended thinking ("" when it does not)."""
    thinking = body.get("thinking")
    return "Let me think." if isinstance(thinking, dict) and thinking.get("type") == "enabled" else ""


def _validate_anthropic(body: Any) -> str | None:
    """The checks the real Messages API makes that a translation bug would trip."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    prev = None
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if role == prev:
            return "messages: roles must alternate between 'user' and 'assistant'"
        prev = role
        content = m.get("content")
        if isinstance(content, list):
            for j, block in enumerate(content):
                kind = block.get("type") if isinstance(block, dict) else None
                if kind not in ("text", "image", "tool_use", "tool_result", "document", "thinking"):
                    return f"messages.{i}.content.{j}.type: unknown block type {kind!r}"
                if kind == "text" and not str(block.get("text", "")).strip():
                    return f"messages.{i}.content.{j}: text content blocks must contain non-whitespace text"
        elif not isinstance(content, str):
            return f"messages.{i}.content: Input should be a string or a list of blocks"
    if messages[0].get("role") != "user":
        return "messages: first message must use the 'user' role"
    last = [m for m in messages if m.get("role") == "assistant"][-1:]
    blocks = last[0].get("content") if last else None
    if _thinking(body) and isinstance(blocks, list) and any(b.get("type") == "tool_use" for b in blocks) \
            and blocks[0].get("type") not in ("thinking", "redacted_thinking"):
        # What Claude says when a tool-use turn comes back without the thinking that preceded it.
        return "messages: when `thinking` is enabled, a final `assistant` message must start with a thinking block"
    return None


def _main() -> None:  # pragma: no cover - manual use
    import argparse

    parser = argparse.ArgumentParser(description="run a fake LLM upstream")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with FakeUpstream.running(port=args.port) as up:
        print(f"fake upstream at {up.url} (OpenAI base_url {up.openai_url}, Anthropic base_url {up.anthropic_url})",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":  # pragma: no cover
    _main()
