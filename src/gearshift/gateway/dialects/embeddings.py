"""OpenAI embeddings (`/v1/embeddings`): a string or a batch, routed like any request (a `fixed` router
or the model's own name), forwarded to the model's OpenAI-compatible embeddings API, costed from its
input tokens and traced. Never streamed, gated or shadowed: vectors have no answer to grade."""

from __future__ import annotations

from typing import Any

from gearshift.errors import BadRequest
from gearshift.gateway.dialects.base import Dialect, StreamRender
from gearshift.gateway.dialects.chat import short
from gearshift.gateway.executor import Answer, Executor
from gearshift.jsonfast import dumps
from gearshift.providers.base import Completion
from gearshift.request import ChatRequest
from gearshift.route import Route
from gearshift.trace import Trace


def _texts(value: Any) -> list[str] | None:
    """The texts of an `input`: a string, or an array of strings; None for token arrays (also valid)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def _tokens(value: Any) -> bool:
    """Whether `input` is an array of token ids, or an array of such arrays."""
    if not isinstance(value, list) or not value:
        return False
    rows = value if all(isinstance(v, list) for v in value) else [value]
    return all(row and all(isinstance(t, int) and not isinstance(t, bool) for t in row) for row in rows)


class EmbeddingsDialect(Dialect):
    """OpenAI's embeddings API: the client's body goes to the routed model's `/embeddings` as it is."""

    kind = "embeddings"
    paths = ("/v1/embeddings", "/embeddings")
    shadow = False
    cache = False

    def parse(self, body: Any, headers: Any, client: str | None) -> ChatRequest:
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        value = body.get("input")
        texts = _texts(value)
        if texts is None and not _tokens(value):
            raise BadRequest(f"`input` must be a string, a non-empty array of strings or of token ids; got "
                             f"{short(value)}", param="input")
        if "model" in body and not isinstance(body["model"], str):
            raise BadRequest("`model` must be a string", param="model")
        if body.get("stream"):
            raise BadRequest("embeddings are not streamed: leave `stream` out", param="stream")
        # Routers read the chat form: the texts as one user message (a size signal, rules' keywords).
        text = "\n".join(texts or ())
        chat = {"model": body.get("model", ""), "messages": [{"role": "user", "content": text}]}
        if isinstance(body.get("metadata"), dict):
            chat["metadata"] = body["metadata"]
        req = ChatRequest.from_http(chat, headers, client)
        req.native = {k: v for k, v in body.items() if k != "metadata"}
        return req

    async def run(self, executor: Executor, route: Route, request: ChatRequest, trace: Trace) -> Answer:
        return await executor.embed(route, request, trace)

    def render(self, completion: Completion, request: ChatRequest, trace: Trace) -> bytes:
        return completion.raw or dumps(completion.body)

    def streamer(self, request: ChatRequest, trace: Trace) -> StreamRender:
        raise BadRequest("embeddings are not streamed", param="stream")  # parse refused `stream` already
