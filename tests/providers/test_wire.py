"""The whole-answer HTTP client against raw servers that answer with the bytes each test chooses: keep-alive
reuse, framing, failures mid-answer, timeouts, cancellation, the per-host limit, header smuggling and TLS."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from gearshift.config import ModelConfig, Price
from gearshift.errors import UpstreamError
from gearshift.providers.http import SessionOwner, post_whole, timeouts
from gearshift.providers.wire import USER_AGENT, BadHeader, ConnectFailed, ConnectTimeout, Disconnected, Wire

OK = b'{"ok": true}'


def answer(body: bytes = OK, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status, len(body), extra, body)


class Raw:
    """An HTTP server on 127.0.0.1 that reads each request whole and writes `reply(n)` for the n-th (None: close
    the connection instead; an answer saying `Connection: close` closes it after; a connection `idle` seconds
    without a request is closed); it counts connections and keeps the requests' bytes."""

    def __init__(self, reply: Callable[[int], bytes | None], delay: float = 0.0, tls: ssl.SSLContext | None = None,
                 idle: float | None = None):
        self.reply, self.delay, self.tls, self.idle = reply, delay, tls, idle
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Raw:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:  # kept-alive connections end with the server, not with the loop
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://{'localhost' if self.tls else '127.0.0.1'}:{port}/v1/x"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle)
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                self.requests.append(head + await reader.readexactly(length))
                if self.delay:
                    await asyncio.sleep(self.delay)
                out = self.reply(len(self.requests))
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if b"Connection: close" in out:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, asyncio.CancelledError):
            pass
        finally:
            self.open -= 1
            writer.close()
            self.handlers.discard(task)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_answers_reuse_one_connection_and_the_request_is_what_the_caller_gave() -> None:
    async def go() -> None:
        async with Raw(lambda n: answer(b'{"n": %d}' % n)) as srv:
            wire = Wire()
            bodies = [(await wire.post(srv.url, b'{"q": 1}', {"Authorization": "Bearer k"})).body for _ in range(5)]
            assert bodies == [b'{"n": %d}' % n for n in range(1, 6)]
            assert srv.connections == 1  # kept alive
            head, _, body = srv.requests[0].partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            assert lines[0] == b"POST /v1/x HTTP/1.1" and body == b'{"q": 1}'
            assert b"Authorization: Bearer k" in lines and b"Content-Length: 8" in lines
            assert f"User-Agent: {USER_AGENT}".encode() in lines
            wire.close()
    run(go())


def test_chunked_and_close_delimited_answers_are_read_whole() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"

    async def go() -> None:
        async with Raw(lambda n: chunked) as srv:
            wire = Wire()
            assert (await wire.post(srv.url, b"{}", {})).body == b"hello world"
            assert (await wire.post(srv.url, b"{}", {})).body == b"hello world"
            assert srv.connections == 1
        replies = iter([until_close])
        async with Raw(lambda n: next(replies, None)) as srv:
            reply = await Wire().post(srv.url, b"{}", {})
            assert (reply.status, reply.body) == (200, b"all of it")
    run(go())


def test_connection_close_and_interim_answers() -> None:
    async def go() -> None:
        async with Raw(lambda n: answer(extra=b"Connection: close\r\n")) as srv:
            wire = Wire()
            for _ in range(3):
                assert (await wire.post(srv.url, b"{}", {})).body == OK
            assert srv.connections == 3  # the server said close: never reused
        async with Raw(lambda n: b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + answer()) as srv:
            reply = await Wire().post(srv.url, b"{}", {})
            assert (reply.status, reply.body) == (200, OK)
    run(go())


def test_error_answers_keep_their_status_body_and_headers() -> None:
    async def go() -> None:
        async with Raw(lambda n: answer(b'{"error": "slow down"}', b"429 Too Many Requests",
                                        b"Retry-After: 7\r\n")) as srv:
            reply = await Wire().post(srv.url, b"{}", {})
            assert reply.status == 429 and reply.body == b'{"error": "slow down"}'
            assert reply.headers["retry-after"] == "7"
    run(go())


@pytest.mark.parametrize("bad", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly part",  # closed mid-body
    b"not http at all\r\n\r\n",
])
def test_a_broken_answer_is_a_disconnect_and_the_connection_is_not_reused(bad: bytes) -> None:
    async def go() -> None:
        replies = iter([bad])
        async with Raw(lambda n: next(replies, answer())) as srv:
            wire = Wire()
            with pytest.raises(Disconnected):
                await wire.post(srv.url, b"{}", {})
            assert (await wire.post(srv.url, b"{}", {})).body == OK  # a fresh connection
            assert srv.connections == 2
    run(go())


def test_an_answer_past_the_size_limit_is_refused_and_dropped() -> None:
    async def go() -> None:
        async with Raw(lambda n: answer(b"x" * 5000) if n == 1 else answer()) as srv:
            wire = Wire(max_answer_bytes=4096)
            with pytest.raises(Disconnected, match="larger than 4,096 bytes"):
                await wire.post(srv.url, b"{}", {})
            assert (await wire.post(srv.url, b"{}", {})).body == OK
            assert srv.connections == 2
    run(go())


def test_timeout_and_cancellation_drop_the_connection_and_the_next_call_works() -> None:
    async def go() -> None:
        async with Raw(lambda n: answer(b'{"n": %d}' % n), delay=0.3) as srv:
            wire = Wire()
            with pytest.raises(TimeoutError):
                await wire.post(srv.url, b"{}", {}, total=0.05)
            task = asyncio.create_task(wire.post(srv.url, b"{}", {}))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            reply = await wire.post(srv.url, b"{}", {})
            # The late answers to the first two requests never reach the third: each went to its own connection.
            assert reply.body == b'{"n": 3}' and srv.connections == 3
    run(go())


def test_idle_connections_closed_by_the_server_or_expired_are_not_used() -> None:
    async def go() -> None:
        async with Raw(lambda n: answer(), idle=0.05) as srv:
            wire = Wire()
            await wire.post(srv.url, b"{}", {})
            await asyncio.sleep(0.3)  # the server's keep-alive ends: it closes the idle connection
            assert (await wire.post(srv.url, b"{}", {})).body == OK
            assert srv.connections == 2
        async with Raw(lambda n: answer()) as srv:
            wire = Wire(keepalive=0.0)  # every idle connection has expired when it is next wanted
            await wire.post(srv.url, b"{}", {})
            await wire.post(srv.url, b"{}", {})
            assert srv.connections == 2
    run(go())


def test_one_wire_serves_one_event_loop_after_another() -> None:
    """Lab scripts run one asyncio.run after another with the same providers."""
    import threading

    async def serve(ready: threading.Event, done: asyncio.Event, box: list[Raw]) -> None:
        async with Raw(lambda n: answer()) as srv:
            box.append(srv)
            ready.set()
            while not done.is_set():
                await asyncio.sleep(0.01)

    ready, box = threading.Event(), []
    loop = asyncio.new_event_loop()
    done = asyncio.Event()
    server = threading.Thread(target=loop.run_until_complete, args=(serve(ready, done, box),))
    server.start()
    try:
        assert ready.wait(10)
        wire = Wire()
        for _ in range(2):
            assert run(wire.post(box[0].url, b"{}", {})).body == OK  # type: ignore[attr-defined]
        assert box[0].connections == 2  # the first loop's connection was not used by the second
    finally:
        loop.call_soon_threadsafe(done.set)
        server.join(10)
        loop.close()


def test_calls_to_one_host_hold_at_most_limit_per_host_connections() -> None:
    async def go() -> None:
        async with Raw(lambda n: answer(), delay=0.05) as srv:
            wire = Wire(limit_per_host=2)
            replies = await asyncio.gather(*(wire.post(srv.url, b"{}", {}) for _ in range(6)))
            assert [r.status for r in replies] == [200] * 6
            assert srv.most_open <= 2 and srv.connections == 2
    run(go())


def test_connect_failures_and_timeouts() -> None:
    async def go() -> None:
        async with Raw(lambda n: answer()) as srv:
            url = srv.url
        with pytest.raises(ConnectFailed):  # the server is gone: refused
            await Wire().post(url, b"{}", {})
        # A listener that never accepts, its queue full: the kernel drops the next handshake, which never completes.
        with socket.socket() as full:
            full.bind(("127.0.0.1", 0))
            full.listen(0)
            port = full.getsockname()[1]
            queued = [socket.socket() for _ in range(3)]
            for q in queued:
                q.setblocking(False)
                q.connect_ex(("127.0.0.1", port))
            with pytest.raises(ConnectTimeout):
                await Wire().post(f"http://127.0.0.1:{port}/v1/x", b"{}", {}, total=5, connect=0.2)
            for q in queued:
                q.close()
        with pytest.raises(ValueError, match="http:// or https://"):
            await Wire().post("ftp://example.com/x", b"{}", {})
    run(go())


def test_a_header_with_a_line_break_is_never_sent_nor_shown() -> None:
    secret = "sk-SECRET\r\nX-Injected: 1"
    model = ModelConfig(name="m", provider="openai", upstream_id="m", price=Price(input=1, output=1))

    async def go() -> None:
        async with Raw(lambda n: answer()) as srv:
            with pytest.raises(BadHeader):
                await Wire().post(srv.url, b"{}", {"Authorization": f"Bearer {secret}"})
            with pytest.raises(UpstreamError) as e:
                await post_whole(SessionOwner(None), model, srv.url, {}, {"Authorization": f"Bearer {secret}"},
                                 secret, timeouts(model)[0])
            assert e.value.status == 502 and "SECRET" not in str(e.value) and "Authorization" in str(e.value)
            assert srv.requests == []
    run(go())


def test_a_redirect_is_not_followed_and_says_where_it_points() -> None:
    model = ModelConfig(name="m", provider="openai", upstream_id="m", price=Price(input=1, output=1))

    async def go() -> None:
        moved = answer(b"", b"308 Permanent Redirect", b"Location: https://api.example.com/v2/x\r\n")
        async with Raw(lambda n: moved) as srv:
            with pytest.raises(UpstreamError) as e:
                await post_whole(SessionOwner(None), model, srv.url, {}, {}, None, timeouts(model)[0])
            assert e.value.status == 502 and e.value.upstream_status == 308
            assert "redirected (HTTP 308) to https://api.example.com/v2/x" in str(e.value) and "base_url" in str(e.value)
            assert len(srv.requests) == 1  # sent once, to the configured address only
    run(go())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate "
                                                            "(.ci/run installs it)")
def test_https_verifies_the_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def go(expect_ok: bool) -> None:
        async with Raw(lambda n: answer(), tls=server_tls) as srv:
            if expect_ok:
                wire = Wire()
                assert (await wire.post(srv.url, b"{}", {})).body == OK
                assert (await wire.post(srv.url, b"{}", {})).body == OK
                assert srv.connections == 1
                wire.close()
            else:
                with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                    await Wire().post(srv.url, b"{}", {})

    run(go(expect_ok=False))  # a certificate no trusted authority signed is refused
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted, as an operator's private CA would be
    run(go(expect_ok=True))
