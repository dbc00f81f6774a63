"""Whole answers over HTTP/1.1 keep-alive connections: the upstream call of a request that is not streamed.

aiohttp's client spends ~200 us of CPU per call on this machine (cookies, redirects, tracing signals,
multidicts, payload and timer objects), as much as gearshift's own request path. Here a call is one `write`
of the request and the answer parsed in C by httptools (llhttp, Node.js's parser): a bare pass-through spent
0.21-0.24 ms of CPU per request on this client against 0.31-0.46 ms on aiohttp's, at 16 concurrent clients
(`benchmarks/overhead.py`, rows wire-pt and aiohttp-pt, five runs on 2026-12-02). Streams stay on aiohttp (`providers.http.SSEStream`): they are long, so a
call's fixed cost matters little there.

What it does not do, on purpose: redirects and cookies (aiohttp's session followed and kept them; LLM APIs
use neither, and a redirect of an authenticated POST is better refused than followed), proxies (the session
did not read the proxy variables either), and compression (aiohttp asked for gzip; an answer of a few KB on a
fast link gains less than the inflating costs). A redirect's 3xx reaches the adapter as an upstream error. A connection is reused only after a complete answer that allows keep-alive, and
dropped on any failure or cancellation, so a half-read answer never meets the next request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from time import monotonic
from typing import cast
from urllib.parse import unquote, urlsplit

import httptools

USER_AGENT = "gearshift"  # some API front ends refuse requests that name no client
MAX_ANSWER_BYTES = 100 * 2**20  # an answer's head and body; a long answer with logprobs is a few MB


class ConnectFailed(ConnectionError):
    """The upstream could not be reached (refused, unreachable, TLS handshake failed)."""


class ConnectTimeout(TimeoutError):
    """Connecting to the upstream took longer than its connect timeout."""


class BadHeader(ValueError):
    """A header (a configured one, or a key read from the environment) holds a line break: never sent."""


class Disconnected(ConnectionError):
    """The upstream closed the connection, or sent what is not HTTP, before its answer was complete."""


@dataclass(slots=True)
class Reply:
    """An upstream's complete answer."""

    status: int
    body: bytes
    raw_headers: list[tuple[bytes, bytes]]

    @property
    def headers(self) -> dict[str, str]:
        """The answer's headers, names in lower case (built when asked: only error answers need them)."""
        return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.raw_headers}


@dataclass(slots=True)
class _Target:
    key: tuple[str, str, int]  # (scheme, host, port): the pool
    host: str
    port: int
    tls: bool
    head: bytes  # request line and the headers every call to this URL sends


@dataclass(slots=True)
class _Pool:
    slots: asyncio.Semaphore  # calls in flight to the host, at most limit_per_host
    idle: list[_Conn] = field(default_factory=list)


class _Conn(asyncio.Protocol):
    """One connection: at most one request in flight, its answer gathered by httptools' callbacks."""

    def __init__(self, max_bytes: int = MAX_ANSWER_BYTES) -> None:
        self.max_bytes = max_bytes
        self.received = 0
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Reply] | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.keep = False
        self.headers_done = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        w = self.waiter
        if w is None or w.done():
            return
        if self.headers_done and not self._framed():  # an answer delimited by the connection's close
            self.keep = False
            w.set_result(Reply(self.parser.get_status_code(), b"".join(self.chunks), self.headers))
        else:
            w.set_exception(Disconnected("the upstream closed the connection before its answer was complete"))

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: this connection's state is unknown
            self.close()
            return
        self.received += len(data)
        if self.received > self.max_bytes:  # a broken or hostile upstream must not fill the gateway's memory
            self._fail(f"the upstream's answer is larger than {self.max_bytes:,} bytes")
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("the upstream asked to switch protocols")
        except httptools.HttpParserError as e:
            self._fail(f"the upstream's answer is not valid HTTP ({e})")

    # httptools' callbacks
    def on_message_begin(self) -> None:
        self.headers, self.chunks, self.headers_done = [], [], False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        w, self.waiter = self.waiter, None
        self.keep = self.parser.should_keep_alive()
        if w is not None and not w.done():
            status = self.parser.get_status_code()
            if 100 <= status < 200:  # an interim answer (103 Early Hints): the real one follows
                self.waiter = w
                return
            w.set_result(Reply(status, b"".join(self.chunks), self.headers))

    def _framed(self) -> bool:
        return any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in self.headers)

    def _fail(self, why: str) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_exception(Disconnected(why))
        self.close()

    def send(self, data: bytes) -> asyncio.Future[Reply]:
        if self.transport is None:  # closed by the server between connecting and this call
            raise Disconnected("the upstream closed the connection before the request was sent")
        self.waiter = asyncio.get_running_loop().create_future()
        self.keep = False
        self.received = 0
        self.transport.write(data)
        return self.waiter

    def usable(self, now: float, keepalive: float) -> bool:
        t = self.transport
        return t is not None and not t.is_closing() and now - self.idle_since < keepalive

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class Wire:
    """Keep-alive connection pools, one per upstream host, for POSTs that wait for a whole answer."""

    def __init__(self, limit_per_host: int = 256, keepalive: float = 30.0,
                 max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        self.limit_per_host = limit_per_host
        self.keepalive = keepalive
        self.max_answer_bytes = max_answer_bytes
        self._targets: dict[str, _Target] = {}
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._tls: ssl.SSLContext | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], total: float | None = None,
                   connect: float | None = None) -> Reply:
        """POST `body` to `url` and wait for the whole answer, within `total` seconds (connecting within
        `connect`). Raises ConnectFailed, ConnectTimeout, TimeoutError or Disconnected."""
        t = self._targets.get(url) or self._target(url)
        if asyncio.get_running_loop() is not self._loop:  # connections belong to the loop that made them (lab
            self._new_loop()                              # scripts run one asyncio.run after another)
        pool = self._pools.get(t.key)
        if pool is None:
            pool = self._pools[t.key] = _Pool(asyncio.Semaphore(self.limit_per_host))
        lines = [t.head]
        for k, v in headers.items():
            if "\r" in v or "\n" in v or "\r" in k or "\n" in k:  # a header must not smuggle another
                raise BadHeader(f"header {k.splitlines()[0][:40]!r} holds a line break; not sent")
            lines.append(f"{k}: {v}\r\n".encode())
        lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
        lines.append(body)
        async with pool.slots, asyncio.timeout(total):
            conn = self._idle(pool) or await self._connect(t, connect)
            try:
                reply = await conn.send(b"".join(lines))
            except BaseException:  # a failure, a timeout or a cancelled caller: the connection's state is unknown
                conn.close()
                raise
        if conn.keep and conn.transport is not None and not self._closed:
            conn.idle_since = monotonic()
            pool.idle.append(conn)
        else:
            conn.close()
        return reply

    def _new_loop(self) -> None:
        for pool in self._pools.values():
            for conn in pool.idle:
                with contextlib.suppress(RuntimeError):  # their loop may be closed
                    conn.close()
        self._pools.clear()
        self._loop = asyncio.get_running_loop()

    def _idle(self, pool: _Pool) -> _Conn | None:
        now = monotonic()
        while pool.idle:
            conn = pool.idle.pop()  # the most recently used: the least likely to have been closed by the server
            if conn.usable(now, self.keepalive):
                return conn
            conn.close()
        return None

    async def _connect(self, t: _Target, timeout: float | None) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(self.max_answer_bytes), t.host, t.port, ssl=self._context() if t.tls else None,
                    server_hostname=t.host if t.tls else None)
        except TimeoutError as e:
            raise ConnectTimeout(f"connecting to {t.host}:{t.port} took longer than {timeout:g}s") from e
        except OSError as e:  # refused, unreachable, unknown host, TLS certificate refused (ssl.SSLError)
            raise ConnectFailed(f"cannot connect to {t.host}:{t.port}: {e.strerror or e}") from e
        return conn

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _target(self, url: str) -> _Target:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"{url!r}: an upstream URL is http:// or https:// with a host")
        tls = u.scheme == "https"
        port = u.port or (443 if tls else 80)
        netloc = u.netloc.rsplit("@", 1)[-1]
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        head = f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\nUser-Agent: {USER_AGENT}\r\n"
        if u.username is not None:  # credentials in the URL, as aiohttp would send them
            token = base64.b64encode(f"{unquote(u.username)}:{unquote(u.password or '')}".encode()).decode()
            head += f"Authorization: Basic {token}\r\n"
        t = _Target((u.scheme, u.hostname, port), u.hostname, port, tls, head.encode())
        self._targets[url] = t
        return t

    def close(self) -> None:
        """Close every idle connection; those in flight close when their call ends (a reload closes the old
        plan's providers while their last calls run)."""
        self._closed = True
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.close()
            pool.idle.clear()
