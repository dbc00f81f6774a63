"""OpenAI-compatible `/chat/completions` upstreams: OpenAI, vLLM, Ollama, llama.cpp server, OpenRouter,
Together, Groq, DeepSeek...

The client's body is forwarded untouched apart from `model` (and `stream`/`stream_options`, which
gearshift controls, and `metadata`, which carries gearshift's routing hints: see `forward_metadata`), so fields this adapter does not know still reach the upstream. This is the
benchmarked hot path: one dict copy, one orjson encode and decode per call; the answer's bytes reach
the client as the upstream sent them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

from gearshift.jsonfast import loads
from gearshift.providers.base import Completion, Provider, Stream, Usage, estimate_tokens
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
from gearshift.providers.openai_responses import ResponsesEventStream, responses_body, to_completion
from gearshift.request import ChatRequest, strip_metadata

if TYPE_CHECKING:
    import aiohttp

    from gearshift.config import ModelConfig


class OpenAICompatProvider(Provider):
    """One model behind an OpenAI-compatible chat-completions endpoint."""

    kind = "openai"
    default_base_url = "https://api.openai.com/v1"
    logprobs = True  # forwarded in the body; the answer's `choices[].logprobs` comes back as sent
    responses_api = True  # `api: responses`: Responses clients' requests go to its /responses as they are

    def __init__(self, model: ModelConfig, session: aiohttp.ClientSession | None, base_dir: str = ".") -> None:
        super().__init__(model, session, base_dir)
        base = (model.base_url or self.default_base_url).rstrip("/")
        self._url = base + "/chat/completions"
        self._embeddings_url = base + "/embeddings"
        # Requests that came in on /v1/responses go to the upstream's own Responses API when it has one.
        self._responses_url = base + "/responses" if model.api == "responses" else None
        self._timeout, self._stream_timeout = timeouts(model)
        self._sessions = SessionOwner(session)
        self._static_headers = {"Content-Type": JSON_CONTENT, **model.headers}

    def _headers(self) -> tuple[dict[str, str], str | None]:
        # The key is read from the environment per call (never kept in config objects); cheap.
        key = self.model.api_key()
        if not key:
            return traced(self._static_headers), None
        headers = dict(self._static_headers)
        headers["Authorization"] = "Bearer " + key
        return traced(headers), key

    async def complete(self, request: ChatRequest) -> Completion:
        if self._responses_url is not None and request.api == "responses":
            body = responses_body(request, self.model, self.routing_keys, stream=False)
            doc, raw = await self._post(self._responses_url, body)
            return to_completion(doc, request, self.model, raw)
        body = request.with_model(self.model.upstream_id)
        strip_metadata(body, self.model.forward_metadata, self.routing_keys)
        if body.get("stream"):  # the gateway may ask for a whole answer of a streamed request (cascades)
            body["stream"] = False
        body.pop("stream_options", None)  # OpenAI refuses stream_options without stream
        headers, key = self._headers()
        doc, raw = await post_whole(self._sessions, self.model, self._url, body, headers, key, self._timeout)
        if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list):
            if isinstance(doc, dict) and "error" in doc:  # some servers answer 200 with an error body
                raise event_error(self.model, doc["error"], key)
            raise bad_body(self.model, "no `choices` in the chat.completion")
        return Completion(doc, _usage(doc.get("usage"), doc, request), raw)

    async def embed(self, request: ChatRequest) -> Completion:
        body = dict(request.native or {})
        body["model"] = self.model.upstream_id
        strip_metadata(body, self.model.forward_metadata, self.routing_keys)
        doc, raw = await self._post(self._embeddings_url, body)
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            if isinstance(doc, dict) and "error" in doc:
                raise event_error(self.model, doc["error"], None)
            raise bad_body(self.model, "no `data` in the embeddings list")
        usage = doc.get("usage")
        if isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
            return Completion(doc, Usage(int(usage.get("prompt_tokens") or 0), 0), raw)
        return Completion(doc, Usage(request.estimated_tokens(), 0, estimated=True), raw)

    async def _post(self, url: str, body: dict[str, Any]) -> tuple[Any, bytes]:
        """POST a JSON body; the parsed answer and its bytes (UpstreamError for a failure or a bad status)."""
        headers, key = self._headers()
        return await post_whole(self._sessions, self.model, url, body, headers, key, self._timeout)

    def stream(self, request: ChatRequest) -> Stream:
        if self._responses_url is not None and request.api == "responses":
            headers, key = self._headers()
            return ResponsesEventStream(self.model, self._sessions, request, self._responses_url,
                                        responses_body(request, self.model, self.routing_keys, stream=True),
                                        headers, key, self._stream_timeout)
        body = request.with_model(self.model.upstream_id)
        strip_metadata(body, self.model.forward_metadata, self.routing_keys)
        body["stream"] = True
        options = body.get("stream_options")
        client_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        # Always ask for usage so costs are measured, not estimated; hide it if the client did not ask.
        body["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) \
            else {"include_usage": True}
        headers, key = self._headers()
        return _OpenAIStream(self.model, self._sessions, request, self._url, body, headers, key,
                             self._stream_timeout, client_usage)

    async def close(self) -> None:
        await self._sessions.close()


def _usage(usage: Any, doc: dict[str, Any], request: ChatRequest) -> Usage:
    if isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
        return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    try:
        text = doc["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        text = ""
    return Usage(request.estimated_tokens(), estimate_tokens(text if isinstance(text, str) else ""), estimated=True)


class _OpenAIStream(SSEStream):
    def __init__(self, model: ModelConfig, sessions: SessionOwner, request: ChatRequest, url: str,
                 body: dict[str, Any], headers: dict[str, str], secret: str | None,
                 timeout: aiohttp.ClientTimeout, client_usage: bool) -> None:
        super().__init__(model, sessions, request, url, body, headers, secret, timeout)
        self._client_usage = client_usage

    async def _translate(self, events: AsyncIterator[tuple[str, bytes]]) -> AsyncGenerator[dict[str, Any], None]:
        parts = self._parts
        async for _, data in events:
            if data == b"[DONE]":
                return
            chunk = loads(data)
            if not isinstance(chunk, dict):
                continue
            choices = chunk.get("choices")
            usage = chunk.get("usage")
            if usage and isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
                self._reported = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
            if choices:
                delta = choices[0].get("delta")
                if delta:
                    content = delta.get("content")
                    if content:
                        parts.append(content)
            elif "error" in chunk:
                raise event_error(self.model, chunk["error"], self._secret)
            elif usage and not self._client_usage:
                continue  # the usage-only final chunk the client did not ask for: kept for the gateway
            yield chunk

