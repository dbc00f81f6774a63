"""Running a gateway: in the foreground (`gearshift serve`) or in a background thread (tests, demo)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aiohttp import web

from gearshift.config import Config
from gearshift.errors import ConfigError
from gearshift.gateway.app import GATEWAY_KEY, Gateway, create_app
from gearshift.gateway.edges import GatewayRunner
from gearshift.plan import Plan
from gearshift.plan import load as load_plan
from gearshift.plan import of as plan_of

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


# Adds routes to a gateway's application before it starts (the dashboard, which the gateway does not import).
Routes = Callable[[web.Application], None]


def serve(config: Config | Plan, host: str | None = None, port: int | None = None, workers: int | None = None,
          routes: Routes | None = None) -> None:
    """Serve until SIGINT/SIGTERM; on stop, in-flight requests finish and every trace is written.

    With several workers, each is a process of its own on the same port (SO_REUSEPORT: the kernel
    spreads connections); they share the store as replicas do. `routes` adds routes to each worker's app."""
    plan = plan_of(config)  # checked and built once, before any worker starts
    config = plan.config
    host = host or config.server.host
    port = config.server.port if port is None else port
    workers = workers or config.server.workers
    if workers > 1:
        port = port or free_port()  # every worker must bind the same port
        server = config.server.model_copy(update={"workers": workers})
        _serve_workers(dataclasses.replace(plan, config=config.model_copy(update={"server": server})),
                       host, port, workers, routes)
        return
    _serve_one(plan, host, port, reuse_port=False, routes=routes)


async def _settle_gc(app: web.Application) -> None:
    """Once started: what start-up made (modules, config, routers) leaves the cyclic collector's
    scans (gc.freeze), and young collections run less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, older, oldest)


def _serve_one(plan: Plan, host: str, port: int, reuse_port: bool, workers_dir: str | None = None,
               routes: Routes | None = None) -> None:
    # A SIGHUP before the event loop can take it (a worker still starting) would end the process: note
    # it instead, and reload once serving.
    early = threading.Event()
    signal.signal(signal.SIGHUP, lambda signum, frame: early.set())
    _event_loop_policy()
    config = plan.config
    app = create_app(plan, workers_dir=workers_dir)
    if routes is not None:
        routes(app)
    app.on_startup.append(_settle_gc)  # after the gateway's own start-up
    log.info("gearshift gateway on http://%s:%d (%d routers, %d models, store %s, pid %d)", host, port,
             len(config.routers), len(config.models), config.store.url.split("://")[0], os.getpid())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve_until_signal(app, config, host, port, reuse_port, early))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass  # SIGTERM/SIGINT: the runner's cleanup below drains in-flight requests and the trace writer
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def runner(app: web.Application, config: Config, **kwargs: object) -> GatewayRunner:
    """The gateway's AppRunner: aiohttp's, with the header timeout and per-client connection limit."""
    return GatewayRunner(app, header_timeout=config.server.header_timeout_seconds,
                         max_per_client=config.server.max_connections_per_client, access_log=None, **kwargs)


async def _serve_until_signal(app: web.Application, config: Config, host: str, port: int, reuse_port: bool,
                              early: threading.Event | None = None) -> None:
    """What web.run_app does, with the gateway's runner: serve until a signal raises GracefulExit."""
    r = runner(app, config, handle_signals=True, shutdown_timeout=30)
    await r.setup()
    gateway = app[GATEWAY_KEY]
    reloads: set[asyncio.Task[bool]] = set()

    def reload() -> None:
        task = asyncio.ensure_future(gateway.reload())
        reloads.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(reloads.discard)

    # SIGHUP reloads the config file (its default action would end the process).
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
    if early is not None and early.is_set():
        reload()
    try:
        await web.TCPSite(r, host, port, reuse_port=reuse_port).start()
        await asyncio.Event().wait()
    finally:
        await r.cleanup()


def _serve_workers(plan: Plan, host: str, port: int, workers: int, routes: Routes | None = None) -> None:
    """Run `workers` processes on one port; restart one that dies, with backoff, while the others serve."""
    # fork: a worker starts from the built plan at once, with nothing to re-read or re-import.
    ctx = multiprocessing.get_context("fork")
    # Where the workers publish their counts: /metrics and /health from any worker add up all of them.
    shared = tempfile.mkdtemp(prefix="gearshift-workers-")

    def spawn(i: int) -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=_serve_one, args=(plan, host, port, True, shared, routes), name=f"gearshift-worker-{i}")
        proc.start()
        return proc

    procs = [spawn(i) for i in range(workers)]
    stopping = threading.Event()
    hangup = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()

    def reload(signum: int, frame: object) -> None:
        hangup.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    signal.signal(signal.SIGHUP, reload)
    log.info("gearshift: %d workers on http://%s:%d (pids %s)", workers, host, port,
             ", ".join(str(p.pid) for p in procs))
    backoff = [Backoff() for _ in procs]
    while not stopping.wait(0.1):
        if hangup.is_set():
            hangup.clear()
            plan = _reloaded(plan)  # a worker restarted later starts from the config in force
            for proc in procs:
                if proc.is_alive() and proc.pid is not None:
                    os.kill(proc.pid, signal.SIGHUP)  # each worker reloads the file itself
        now = time.monotonic()
        for i, proc in enumerate(procs):
            if proc.is_alive():
                backoff[i].alive(now)
                continue
            due = backoff[i].due
            if due is None:
                delay = backoff[i].died(now)
                log.error("worker %s (pid %s) exited with code %s: restarting it in %.1f s; the others serve",
                          proc.name, proc.pid, proc.exitcode, delay)
            elif now >= due:
                procs[i] = spawn(i)
                backoff[i].restarted(now)
                log.info("worker %s restarted (pid %s)", procs[i].name, procs[i].pid)
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)  # each finishes its requests and writes its traces
    for proc in procs:
        proc.join(60)
    shutil.rmtree(shared, ignore_errors=True)


def _reloaded(plan: Plan) -> Plan:
    """The config file's plan, or the old one when it does not load (the workers log why)."""
    try:
        return load_plan(plan.source, serving=True)
    except ConfigError:
        return plan


class Backoff:
    """When to restart a dead worker: 0.5 s after its first death, doubling to 30 s while it keeps
    dying young; a worker that then lives a minute starts again from 0.5 s."""

    FIRST, CAP, HEALTHY = 0.5, 30.0, 60.0

    def __init__(self) -> None:
        self.delay = self.FIRST
        self.due: float | None = None
        self.started = time.monotonic()

    def alive(self, now: float) -> None:
        if now - self.started >= self.HEALTHY:
            self.delay = self.FIRST

    def died(self, now: float) -> float:
        self.due, delay = now + self.delay, self.delay
        self.delay = min(self.CAP, self.delay * 2)
        return delay

    def restarted(self, now: float) -> None:
        self.due, self.started = None, now


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
def running(config: Config | Plan, port: int | None = None, routes: Routes | None = None) -> Iterator[Running]:
    """Start the gateway on 127.0.0.1 in a thread; stop it (draining traces) on exit."""
    app = create_app(config)
    if routes is not None:
        routes(app)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    gw_runner = runner(app, app[GATEWAY_KEY].config)
    failure: list[BaseException] = []
    bound: list[int] = []

    async def start() -> None:
        await gw_runner.setup()
        # Port 0 when none is asked: the kernel picks a free one as it binds (a port found free earlier may
        # be taken by the time the gateway has started).
        site = web.TCPSite(gw_runner, "127.0.0.1", port or 0)
        await site.start()
        bound.append(gw_runner.addresses[0][1])

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
        loop.run_until_complete(gw_runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="gearshift-gateway", daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        raise failure[0]
    if not bound:
        raise RuntimeError("the gateway did not start within 30 s")
    port = bound[0]
    try:
        yield Running(url=f"http://127.0.0.1:{port}", port=port, gateway=app[GATEWAY_KEY])
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(60)
