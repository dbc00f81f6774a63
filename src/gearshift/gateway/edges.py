"""The HTTP edges aiohttp leaves open: slow request heads, too many connections from one client IP,
and its text/plain answers to malformed requests (here OpenAI-style JSON)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gearshift.jsonfast import dumps


class GatewayHandler(RequestHandler):
    """One client connection: closed when a request head takes longer than the header timeout, or
    at once when its IP already holds the most connections allowed."""

    def __init__(self, server: GatewayServer, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self._edge = server
        self._ip: str | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._heads_at_arm = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._ip = peer[0] if isinstance(peer, tuple) else None
        if self._ip is not None:
            counts = self._edge.per_ip
            counts[self._ip] = counts.get(self._ip, 0) + 1
            if counts[self._ip] > self._edge.max_per_client:
                self.force_close()
                return
        self._arm()  # a connection that sends nothing is a slow head too

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._ip is not None:
            counts = self._edge.per_ip
            counts[self._ip] -= 1
            if counts[self._ip] <= 0:
                del counts[self._ip]
            self._ip = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Bytes while no request is queued or running start a new head (after keep-alive idling too);
        # body bytes arrive while one is, and do not.
        if self._head_timer is None and not self._request_in_progress and not self._messages:
            self._arm()
        super().data_received(data)
        if self._head_timer is not None and self._request_count > self._heads_at_arm:
            self._disarm()  # the head is complete

    def _arm(self) -> None:
        self._heads_at_arm = self._request_count
        self._head_timer = self._loop.call_later(self._edge.header_timeout, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._request_count == self._heads_at_arm and not self._request_in_progress and not self._messages:
            self.force_close()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Malformed or oversized requests (and failures outside any handler) as OpenAI-style JSON."""
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        if status >= 500:
            err = {"message": "internal error", "type": "server_error", "param": None, "code": None}
        else:
            text = " ".join(str(message or exc or "malformed request").split())[:200]
            err = {"message": f"malformed HTTP request: {text}", "type": "invalid_request_error", "param": None,
                   "code": "bad_http_request"}
        resp = web.Response(status=status, body=dumps({"error": err}), content_type="application/json")
        resp.force_close()
        return resp


class GatewayServer(web.Server):
    """aiohttp's low-level server, making GatewayHandler connections."""

    def __init__(self, *args: Any, header_timeout: float, max_per_client: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.max_per_client = max_per_client
        self.per_ip: dict[str, int] = {}

    def __call__(self) -> RequestHandler:
        return GatewayHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose server enforces the header timeout and the per-client connection limit."""

    def __init__(self, app: web.Application, *, header_timeout: float, max_per_client: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout, self._max_per_client = header_timeout, max_per_client

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()  # starts the app, as AppRunner does
        return GatewayServer(base.request_handler, request_factory=base.request_factory,
                             handler_cancellation=base.handler_cancellation, loop=base._loop,
                             header_timeout=self._header_timeout, max_per_client=self._max_per_client,
                             **base._kwargs)
