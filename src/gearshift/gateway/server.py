"""Running a gateway: in the foreground (`gearshift serve`) or in a background thread (tests, demo)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web

from gearshift.config import Config
from gearshift.gateway.app import GATEWAY_KEY, Gateway, create_app

log = logging.getLogger("gearshift.gateway")

# Requests allocate and free many small containers; the traces waiting for the writer keep a few per
# request alive, which at the default threshold (700) runs a young collection every few dozen requests.
GC_GEN0_THRESHOLD = 20_000


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(config: Config, host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    """Serve until SIGINT/SIGTERM; on stop, in-flight requests finish and every trace is written.

    With several workers, each is a process of its own on the same port (SO_REUSEPORT: the kernel
    spreads connections); they share the store as replicas do."""
    host = host or config.server.host
    port = config.server.port if port is None else port
    workers = workers or config.server.workers
    if workers > 1:
        port = port or free_port()  # every worker must bind the same port
        server = config.server.model_copy(update={"workers": workers})
        _serve_workers(config.model_copy(update={"server": server}), host, port, workers)
        return
    _serve_one(config, host, port, reuse_port=False)


async def _settle_gc(app: web.Application) -> None:
    """Once started: what start-up made (modules, config, routers) leaves the cyclic collector's
    scans (gc.freeze), and young collections run less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, older, oldest)


def _serve_one(config: Config, host: str, port: int, reuse_port: bool) -> None:
    _event_loop_policy()
    app = create_app(config)
    app.on_startup.append(_settle_gc)  # after the gateway's own start-up
    log.info("gearshift gateway on http://%s:%d (%d routers, %d models, store %s, pid %d)", host, port,
             len(config.routers), len(config.models), config.store.url.split("://")[0], os.getpid())
    web.run_app(app, host=host, port=port, access_log=None, print=None, shutdown_timeout=30,
                handle_signals=True, reuse_port=reuse_port)


def _serve_workers(config: Config, host: str, port: int, workers: int) -> None:
    # fork: a worker starts from the loaded config at once, with nothing to re-read or re-import.
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_serve_one, args=(config, host, port, True), name=f"gearshift-worker-{i}")
             for i in range(workers)]
    for proc in procs:
        proc.start()
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    log.info("gearshift: %d workers on http://%s:%d (pids %s)", workers, host, port,
             ", ".join(str(p.pid) for p in procs))
    while not stopping.is_set() and all(p.is_alive() for p in procs):
        stopping.wait(0.2)
    failed = [p for p in procs if not p.is_alive() and p.exitcode != 0]
    if failed and not stopping.is_set():
        log.error("worker %s exited with code %s: stopping the others", failed[0].name, failed[0].exitcode)
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)  # each finishes its requests and writes its traces
    for proc in procs:
        proc.join(60)
    if failed and not stopping.is_set():
        sys.exit(1)


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
