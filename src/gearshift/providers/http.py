"""Shared plumbing of the HTTP providers: JSON, SSE parsing, timeouts and the error mapping.

One place decides which upstream failures are retryable and what status the client sees, so the
OpenAI-compatible and Anthropic adapters cannot drift apart.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp

from gearshift import telemetry
from gearshift.errors import UpstreamError
from gearshift.providers.base import Stream, Usage, estimate_tokens
from gearshift.providers.wire import BadHeader, ConnectFailed, ConnectTimeout, Wire

if TYPE_CHECKING:
    from gearshift.config import ModelConfig
    from gearshift.request import ChatRequest

from gearshift.jsonfast import JSONDecodeError, dumps, loads  # noqa: F401  (re-exported to the adapters)

JSON_CONTENT = "application/json"
# What an upstream call can raise besides our own UpstreamError: mapped by transport_error().
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, BadHeader, JSONDecodeError, UnicodeDecodeError)
MAX_MESSAGE_CHARS = 1000  # an upstream error page can be huge; the client needs the first lines


def timeouts(model: ModelConfig) -> tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]:
    """(non-streamed, streamed) timeouts of a model.

    `read` bounds the whole answer of a non-streamed call, and the gap between chunks of a stream.
    """
    t = model.timeout
    # No sock_read on a whole answer: `total` bounds it already, and a gap timer is re-armed on every
    # chunk the socket delivers (measurable on the request path at high concurrency).
    whole = aiohttp.ClientTimeout(total=t.connect + t.read, sock_connect=t.connect)
    gaps = aiohttp.ClientTimeout(total=None, sock_connect=t.connect, sock_read=t.read)
    return whole, gaps


def traced(headers: dict[str, str]) -> dict[str, str]:
    """An upstream call's headers, with the current request's W3C `traceparent` while tracing is on."""
    return headers if telemetry.tracer is None else telemetry.inject(headers)


class SessionOwner:
    """Use the gateway's pooled session, or lazily own one (lab scripts, tests) and close it; and the
    provider's own keep-alive connections for whole answers (`wire`)."""

    def __init__(self, session: aiohttp.ClientSession | None) -> None:
        self._shared = session
        self._own: aiohttp.ClientSession | None = None
        self.wire = Wire()

    def get(self) -> aiohttp.ClientSession:
        if self._shared is not None:
            return self._shared
        if self._own is None or self._own.closed:
            self._own = aiohttp.ClientSession()
        return self._own

    async def close(self) -> None:
        self.wire.close()
        if self._own is not None and not self._own.closed:
            await self._own.close()
        self._own = None


async def post_whole(sessions: SessionOwner, model: ModelConfig, url: str, body: dict[str, Any],
                     headers: dict[str, str], secret: str | None, timeout: aiohttp.ClientTimeout) -> tuple[Any, bytes]:
    """POST a JSON body for a whole (not streamed) answer: the answer parsed, and its bytes; UpstreamError for a
    failure, a status of 300 and above, or an answer that is not JSON."""
    try:
        reply = await sessions.wire.post(url, dumps(body), headers, timeout.total, timeout.sock_connect)
        if reply.status < 300:
            return loads(reply.body), reply.body
    except TRANSPORT_ERRORS as exc:
        raise transport_error(model, exc, secret) from exc
    if 300 <= reply.status < 400:  # never followed: an authenticated POST is not sent on to wherever it points
        where = scrub(reply.headers.get("location", "?"), secret)[:200]
        raise UpstreamError(f"model {model.name or model.upstream_id!r}: the upstream redirected (HTTP {reply.status}) "
                            f"to {where}; gearshift does not follow redirects: set the model's base_url to where it "
                            "points", status=502, retryable=True, upstream_status=reply.status)
    raise status_error(model, reply.status, reply.body, secret, headers=reply.headers)


# A key shown in part: its start, a mask, its end (`sk-UPSTR...1111`, `sk-proj-****1234`, `sk-a…9f`).
_MASKED = re.compile(r"(?P<head>[\w\-]{2,})(?P<mask>[.*…•xX]{3,}|…)(?P<tail>[\w\-]{2,})")
_FRAGMENT = 8  # a bare run of this many leading or trailing characters of a key is the key in part


def scrub(text: str, secret: str | None) -> str:
    """Remove a secret, and any fragment of it (start and end around a mask, or a long start or end),
    from text that will reach logs, traces or clients."""
    if not secret:
        return text
    text = text.replace(secret, "***")

    def masked(m: re.Match[str]) -> str:
        head, tail = m["head"], m["tail"]
        # The head may carry text before the key (`key:sk-UP`): any suffix of it that starts the key.
        starts = any(secret.startswith(head[i:]) for i in range(max(0, len(head) - len(secret)), len(head) - 1))
        return "***" if starts and secret.endswith(tail) and len(tail) < len(secret) else m[0]

    text = _MASKED.sub(masked, text)
    if len(secret) >= 2 * _FRAGMENT:
        for part in (secret[:_FRAGMENT], secret[-_FRAGMENT:]):
            if part in text:  # the whole word that holds it goes
                text = re.sub(rf"[\w\-]*{re.escape(part)}[\w\-]*", "***", text)
    return text


_TITLE = re.compile(r"<title[^>]*>([^<]*)</title>", re.IGNORECASE)


def _error_fields(raw: bytes) -> tuple[str, dict[str, Any]]:
    """The human message and the OpenAI-style error fields of an upstream error body, any dialect."""
    try:
        doc = loads(raw)
    except (JSONDecodeError, ValueError, TypeError):
        text = raw.decode("utf-8", "replace").strip()
        if text[:1] == "<":  # a proxy's or load balancer's HTML page: its title says what happened
            title = _TITLE.search(text)
            return f"an HTML page, not the API's JSON{f' ({title[1].strip()[:120]})' if title else ''}", {}
        return text[:MAX_MESSAGE_CHARS], {}
    err: Any = doc.get("error", doc) if isinstance(doc, dict) else doc
    if isinstance(err, dict):
        # OpenAI {"error": {...}}, Anthropic {"type": "error", "error": {"type", "message"}}
        msg = err.get("message") or err.get("detail") or err.get("msg")
        fields = {k: err[k] for k in ("type", "param", "code") if isinstance(err.get(k), str)}
        if msg is None and isinstance(doc, dict):
            msg = doc.get("detail") or doc.get("message")
        text = msg if isinstance(msg, str) else dumps(msg if msg is not None else doc).decode()
        return text[:MAX_MESSAGE_CHARS], fields
    # Ollama / llama.cpp style {"error": "text"}
    return str(err)[:MAX_MESSAGE_CHARS], {}


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """The wait in seconds an upstream asked for: `retry-after-ms`, or `retry-after` as seconds or an
    HTTP date; None when absent or unreadable."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def status_error(model: ModelConfig, status: int, raw: bytes, secret: str | None,
                 kind: str | None = None, headers: Mapping[str, str] | None = None) -> UpstreamError:
    """Map an upstream HTTP error status (and its body) to an UpstreamError.

    Retryable: 408, 409, 429 and 5xx (Anthropic's 529 overloaded included). 401/403 mean *our*
    credentials were refused, which the client cannot fix: 502. Other 4xx pass through with the
    upstream's own message, so the client sees the validation error.
    """
    message, fields = _error_fields(raw)
    message = scrub(message, secret)
    if kind:
        fields.setdefault("type", kind)
    err = _by_status(model, status, message, fields)
    if err.retryable and headers:
        err.retry_after = retry_after(headers)
    return err


def _by_status(model: ModelConfig, status: int, message: str, fields: dict[str, Any]) -> UpstreamError:
    name = model.name or model.upstream_id
    if status in (401, 403):
        where = f" (check ${model.api_key_env})" if model.api_key_env else ""
        return UpstreamError(
            f"the upstream rejected gearshift's credentials for model {name!r} (HTTP {status}){where}",
            status=502, retryable=False, upstream_status=status)
    detail = f": {message}" if message else ""
    if status == 429:
        return UpstreamError(f"model {name!r} is rate limited by its upstream (HTTP 429){detail}",
                             status=429, retryable=True, upstream_status=status)
    if status == 408:
        return UpstreamError(f"model {name!r}: the upstream timed out the request (HTTP 408){detail}",
                             status=504, retryable=True, timeout=True, upstream_status=status)
    if status >= 500 or status == 409:
        return UpstreamError(f"model {name!r}: upstream error (HTTP {status}){detail}",
                             status=502, retryable=True, upstream_status=status)
    if 400 <= status < 500:
        err = UpstreamError(f"model {name!r}: the upstream refused the request (HTTP {status}){detail}",
                            status=status, retryable=False, upstream_status=status)
        # The client made the mistake: show it as the upstream's own validation error.
        err.type = fields.get("type") or "invalid_request_error"
        err.param = fields.get("param")
        code = fields.get("code")
        if code is not None:
            err.code = code
        return err
    return UpstreamError(f"model {name!r}: unexpected upstream status {status}{detail}",
                         status=502, retryable=True, upstream_status=status)


def event_error(model: ModelConfig, err: Any, secret: str | None) -> UpstreamError:
    """An error that arrived inside a 200 stream (Anthropic `error` event, OpenAI `{"error": ...}`)."""
    status = 500
    message = ""
    fields: dict[str, Any] = {}
    if isinstance(err, dict):
        kind = err.get("type")
        status = ANTHROPIC_STATUS.get(kind, 0) if isinstance(kind, str) else 0
        if not status:
            code = err.get("code")
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
        message = str(err.get("message") or "")
        fields = {k: err[k] for k in ("type", "param", "code") if isinstance(err.get(k), str)}
    elif err is not None:
        message = str(err)
    return _by_status(model, status, scrub(message[:MAX_MESSAGE_CHARS], secret), fields)


# Anthropic error types -> the HTTP status the API documents for them.
ANTHROPIC_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
    "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
    "overloaded_error": 529, "timeout_error": 504, "billing_error": 402,
}


def transport_error(model: ModelConfig, exc: BaseException, secret: str | None) -> UpstreamError:
    """Map an exception from the HTTP client (timeouts, refused or reset connections)."""
    name = model.name or model.upstream_id
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        phase = "connecting" if isinstance(exc, aiohttp.ConnectionTimeoutError | ConnectTimeout) else \
            "waiting for the answer"
        limit = model.timeout.connect if phase == "connecting" else model.timeout.read
        return UpstreamError(f"model {name!r}: upstream timed out {phase} (limit {limit:g}s)",
                             status=504, retryable=True, timeout=True)
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectFailed):
        why = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
        return UpstreamError(f"model {name!r}: cannot connect to the upstream: {scrub(str(why), secret)}",
                             status=502, retryable=True)
    if isinstance(exc, BadHeader):  # a configured header or key with a line break: never sent, never shown
        return UpstreamError(f"model {name!r}: {exc}", status=502, retryable=False)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientOSError
                  | ConnectionError):
        return UpstreamError(f"model {name!r}: the upstream closed the connection ({type(exc).__name__})",
                             status=502, retryable=True)
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamError(f"model {name!r}: upstream request failed ({type(exc).__name__}: "
                             f"{scrub(str(exc), secret)[:200]})", status=502, retryable=True)
    if isinstance(exc, JSONDecodeError | UnicodeDecodeError):
        return UpstreamError(f"model {name!r}: the upstream sent invalid JSON", status=502, retryable=True)
    return UpstreamError(f"model {name!r}: upstream call failed ({type(exc).__name__})", status=502, retryable=True)


def bad_body(model: ModelConfig, what: str) -> UpstreamError:
    """The upstream answered 200 with a body we cannot read."""
    name = model.name or model.upstream_id
    return UpstreamError(f"model {name!r}: unexpected upstream answer ({what})", status=502, retryable=True)


async def sse_events(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str, bytes]]:
    """(event, data) pairs of a server-sent-events body.

    Multi-line `data:` fields are joined with newlines as the SSE spec says; comments (`: ping`)
    and `id:`/`retry:` fields are skipped. Reads whatever bytes arrived (not line by line) to keep
    the per-chunk cost low.
    """
    buf = b""
    event = ""
    data: list[bytes] = []
    async for piece in content.iter_any():
        if buf:
            piece = buf + piece
        lines = piece.split(b"\n")
        buf = lines.pop()  # the unfinished last line waits for the next piece
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield event, data[0] if len(data) == 1 else b"\n".join(data)
                event, data = "", []
            elif line.startswith(b"data:"):
                v = line[5:]
                data.append(v[1:] if v.startswith(b" ") else v)
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode()
    if buf.strip():
        line = buf.rstrip(b"\r")
        if line.startswith(b"data:"):
            v = line[5:]
            data.append(v[1:] if v.startswith(b" ") else v)
    if data:  # a server that ends without the final blank line
        yield event, b"\n".join(data)


def _substantive(chunk: dict[str, Any]) -> bool:
    """Whether a chunk carries part of the answer (text, a tool call, a finish, usage)."""
    choices = chunk.get("choices")
    if not choices:
        return True
    choice = choices[0]
    if choice.get("finish_reason"):
        return True
    delta = choice.get("delta") or {}
    return any(v for k, v in delta.items() if k != "role")


class SSEStream(Stream):
    """A streamed upstream call: POST, check the status, translate SSE events into OpenAI chunks.

    `start()` reads up to the first chunk, so an error the upstream reports before any content
    (a refused request, an `error` event right after the headers, a dropped connection) still
    lets the gateway fall back. Subclasses implement `_translate` and set `_reported` when the
    upstream reported usage.
    """

    def __init__(self, model: ModelConfig, sessions: SessionOwner, request: ChatRequest, url: str,
                 body: dict[str, Any], headers: dict[str, str], secret: str | None,
                 timeout: aiohttp.ClientTimeout) -> None:
        self.model = model
        self.request = request
        self.usage = Usage()
        self.text = ""
        self._sessions = sessions
        self._url = url
        self._body = body
        self._headers = headers
        self._secret = secret
        self._timeout = timeout
        self._resp: aiohttp.ClientResponse | None = None
        self._gen: AsyncIterator[dict[str, Any]] | None = None
        self._iter: AsyncGenerator[dict[str, Any], None] | None = None
        self._head: list[dict[str, Any]] = []  # chunks read by start(), yielded first
        self._done = False
        self._parts: list[str] = []
        self._reported: tuple[int, int] | None = None  # (input, output) tokens the upstream reported

    def _translate(self, events: AsyncIterator[tuple[str, bytes]]) -> AsyncGenerator[dict[str, Any], None]:
        raise NotImplementedError

    async def start(self) -> None:
        try:
            resp = await self._sessions.get().post(self._url, data=dumps(self._body), headers=self._headers,
                                                   timeout=self._timeout)
        except TRANSPORT_ERRORS as exc:
            raise transport_error(self.model, exc, self._secret) from exc
        if resp.status >= 300:
            try:
                raw = await resp.read()
            except TRANSPORT_ERRORS:
                raw = b""
            finally:
                resp.release()
            raise status_error(self.model, resp.status, raw, self._secret, headers=resp.headers)
        self._resp = resp
        self._gen = self._translate(sse_events(resp.content))
        # Read up to the first chunk that carries an answer (the role-only opener does not): an
        # upstream that fails before its first token can still be replaced by a fallback.
        while True:
            chunk = await self._pull()
            if chunk is None:
                await self.aclose()
                raise bad_body(self.model, "the stream ended before any answer")
            self._head.append(chunk)
            if _substantive(chunk):
                return

    async def _pull(self) -> dict[str, Any] | None:
        assert self._gen is not None
        try:
            return await self._gen.__anext__()
        except StopAsyncIteration:
            self._done = True
            return None
        except UpstreamError:
            self._release()  # the translator has ended; drop the socket (not reusable mid-body)
            raise
        except TRANSPORT_ERRORS as exc:
            self._release()
            raise transport_error(self.model, exc, self._secret) from exc

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        if self._iter is None:
            self._iter = self._iterate()
        return self._iter

    async def _iterate(self) -> AsyncGenerator[dict[str, Any], None]:
        if self._gen is None:
            raise RuntimeError("call `await stream.start()` before iterating")
        head, self._head = self._head, []
        try:
            for chunk in head:
                yield chunk
            while True:
                nxt = await self._pull()
                if nxt is None:
                    break
                yield nxt
        finally:
            self._finish()
            self._release()

    def _finish(self) -> None:
        self.text = "".join(self._parts)
        if self._reported is not None:
            self.usage = Usage(self._reported[0], self._reported[1])
        else:
            self.usage = Usage(self.request.estimated_tokens(), estimate_tokens(self.text), estimated=True)

    def _release(self) -> None:
        if self._resp is not None:
            # A fully read response goes back to the pool; an abandoned one must drop its socket.
            if self._done:
                self._resp.release()
            else:
                self._resp.close()
            self._resp = None

    async def aclose(self) -> None:
        if self._iter is not None:
            it, self._iter = self._iter, None
            await it.aclose()
        if self._gen is not None:
            gen, self._gen = self._gen, None
            await gen.aclose()  # type: ignore[attr-defined]
        self._finish()
        self._release()
