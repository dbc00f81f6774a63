"""What one client-facing API decides: how its body becomes a ChatRequest, how an answer, a stream
and an error look to its clients, and which credential headers it reads."""

from __future__ import annotations

from typing import Any, ClassVar

from gearshift.errors import GearshiftError, UpstreamError
from gearshift.gateway.executor import Answer, Executor
from gearshift.jsonfast import dumps
from gearshift.providers.base import Completion, Usage
from gearshift.request import ChatRequest
from gearshift.route import Route
from gearshift.trace import Trace


def cost_comment(trace: Trace, model: str) -> bytes:
    """The streamed answer's cost, known only at its end, as an SSE comment (clients ignore those)."""
    return f": gearshift cost_usd={trace.cost_usd:.8f} model={model}\n\n".encode()


class StreamRender:
    """One stream's rendering: OpenAI chunks in, the API's SSE bytes out. Stateful, one per stream."""

    def head(self) -> bytes:
        """Bytes sent once the response is prepared, before the first chunk ("" for none)."""
        return b""

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        """The SSE bytes of one OpenAI `chat.completion.chunk` ("" to send nothing)."""
        raise NotImplementedError

    def error(self, e: UpstreamError) -> bytes:
        """The SSE bytes telling the client the upstream broke mid-stream."""
        raise NotImplementedError

    def tail(self, trace: Trace, model: str, usage: Usage) -> bytes:
        """The closing bytes, once the stream ended: `usage` is the streamed answer's."""
        raise NotImplementedError


class Dialect:
    """One client-facing API. `kind` is its trace endpoint (trace.ENDPOINTS); `paths` its POST routes."""

    kind: ClassVar[str]
    paths: ClassVar[tuple[str, ...]] = ()
    count_paths: ClassVar[tuple[str, ...]] = ()  # POST routes that count a body's input tokens (`count`)
    key_hint: ClassVar[str] = "`Authorization: Bearer <key>`"  # how to send the key, in the 401's message
    shadow: ClassVar[bool] = True  # whether its answers may be shadowed (chat-shaped answers only)
    cache: ClassVar[bool] = True  # whether a router's response cache keeps its answers (chat-shaped answers only)

    def token(self, headers: Any) -> bytes:
        """The client's key from the request headers (b"" when none): `Authorization: Bearer <key>`."""
        auth = headers.get("Authorization", "")
        return auth[7:].strip().encode() if auth[:7].lower() == "bearer " else b""

    def parse(self, body: Any, headers: Any, client: str | None) -> ChatRequest:
        """The internal request of a parsed JSON body; BadRequest for what this API refuses."""
        raise NotImplementedError

    def count(self, body: Any, headers: Any, client: str | None) -> bytes:
        """The JSON bytes answering a token count of a parsed body (its routes: `count_paths`)."""
        raise NotImplementedError

    async def run(self, executor: Executor, route: Route, request: ChatRequest, trace: Trace) -> Answer:
        """A whole answer for the route: the executor's chat completion (gated, escalated) by default."""
        return await executor.complete(route, request, trace)

    def render(self, completion: Completion, request: ChatRequest, trace: Trace) -> bytes:
        """The JSON bytes of a whole answer."""
        raise NotImplementedError

    def streamer(self, request: ChatRequest, trace: Trace) -> StreamRender:
        """A renderer for one streamed answer."""
        raise NotImplementedError

    def error(self, e: GearshiftError) -> bytes:
        """The JSON bytes of an error (its status is `e.status`): OpenAI's `{"error": {...}}` by default."""
        return dumps(e.to_json())
