"""Running a gateway: in the foreground (`gearshift serve`) or in a background thread (tests, demo)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web

from gearshift.config import Config
from gearshift.gateway.app import GATEWAY_KEY, Gateway, create_app

log = logging.getLogger("gearshift.gateway")


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(config: Config, host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGINT/SIGTERM; on stop, in-flight requests finish and every trace is written."""
    _event_loop_policy()
    app = create_app(config)
    host = host or config.server.host
    port = config.server.port if port is None else port
    log.info("gearshift gateway on http://%s:%d (%d routers, %d models, store %s)", host, port,
             len(config.routers), len(config.models), config.store.url.split("://")[0])
    web.run_app(app, host=host, port=port, access_log=None, print=None, shutdown_timeout=30,
                handle_signals=True)


@dataclass
class Running:
    """A gateway running in a background thread."""

    url: str
    port: int
    gateway: Gateway


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(config: Config, port: int | None = None) -> Iterator[Running]:
    """Start the gateway on 127.0.0.1 in a thread; stop it (draining traces) on exit."""
    port = port or free_port()
    app = create_app(config)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner = web.AppRunner(app, access_log=None)
    failure: list[BaseException] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as e:
            failure.append(e)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="gearshift-gateway", daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        raise failure[0]
    try:
        yield Running(url=f"http://127.0.0.1:{port}", port=port, gateway=app[GATEWAY_KEY])
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(60)
