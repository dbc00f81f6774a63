"""Faults under load: `gearshift serve` at concurrency 50 while one thing after another breaks.

Each fault gets a fresh gateway (subprocesses on 127.0.0.1) and a fake upstream that can be told to fail.
For each: requests sent, answered (200), failed, connections refused, traces lost (answered 200 with a
trace id, minus traces found in the store afterwards) and the gateway's RSS before and after.

    python benchmarks/chaos.py [--seconds 4]

Faults: upstream 500s then resets; a worker killed (-9) of two; a PostgreSQL store stopped for a while
(skipped without Debian's postgresql binaries); SIGTERM under load; SIGTERM under load with the
PostgreSQL store down; kill -9 of the whole server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from overhead import _children, free_port, rss_mb, start, stop, wait_ready  # noqa: E402

KEY = "sk-chaos-" + os.urandom(8).hex()
CONCURRENCY = 50
ANSWER = (b'{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":'
          b'{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,'
          b'"completion_tokens":1,"total_tokens":6}}')


def upstream(port: int) -> None:
    """A fake upstream; POST /fault {"mode": "500"|"reset"|"ok", "seconds": s} makes it fail for a while."""
    state = {"mode": "ok", "until": 0.0}

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        await asyncio.sleep(0.002)
        if time.monotonic() < state["until"]:
            if state["mode"] == "500":
                return web.json_response({"error": {"message": "chaos", "type": "server_error"}}, status=500)
            if state["mode"] == "reset" and request.transport is not None:
                request.transport.abort()
                return web.Response()
        return web.Response(body=ANSWER, content_type="application/json")

    async def fault(request: web.Request) -> web.Response:
        body = await request.json()
        state["mode"], state["until"] = body["mode"], time.monotonic() + float(body["seconds"])
        return web.json_response({})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/fault", fault)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    failed: int = 0
    refused: int = 0
    refused_times: list[float] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)


async def load(port: int, seconds: float, tally: Tally, stop_on_refused: bool = False) -> None:
    """Closed-loop load at CONCURRENCY; a refused connection is retried after 10 ms (a client would)."""
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "ok?"}], "max_tokens": 2}
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:
        async def worker() -> None:
            while time.monotonic() < deadline:
                tally.sent += 1
                try:
                    async with s.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
                        await r.read()
                        if r.status == 200:
                            tally.answered += 1
                            if tid := r.headers.get("x-gearshift-trace-id"):
                                tally.ids.add(tid)
                        else:
                            tally.failed += 1
                except aiohttp.ClientConnectorError:
                    tally.failed += 1
                    tally.refused += 1
                    tally.refused_times.append(time.monotonic())
                    if stop_on_refused:
                        return
                    await asyncio.sleep(0.01)
                except (TimeoutError, aiohttp.ClientError):
                    tally.failed += 1
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


class Pg:
    """A PostgreSQL server (tests/support/pg_server.py) that can be stopped and started again."""

    def __init__(self) -> None:
        from tests.support.pg_server import PostgresServer, server_bin

        bin_dir = server_bin()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL binaries (install Debian's postgresql package)")
        self.server = PostgresServer(Path(tempfile.mkdtemp(prefix="gearshift-chaos-pg-")), bin_dir)
        self.server.start()

    def database(self) -> str:
        return self.server.create_database()

    def down(self) -> None:
        self.server.stop()

    def up(self) -> None:
        s = self.server
        opts = (f"-p {s.port} -k {s.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        s._pg(str(s.bin / "pg_ctl"), "-D", str(s.data), "-o", opts, "-l", str(s.root / "log"), "-w", "-t", "60",
              "start")

    def ids(self, url: str) -> set[str]:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(host=str(self.server.sockets), port=self.server.port, user="postgres",
                             dbname=name) as c:
            return {r[0] for r in c.execute("SELECT id FROM traces").fetchall()}

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.server.root, ignore_errors=True)


class Gateway:
    """`gearshift serve` on a free port with its own store."""

    def __init__(self, tmp: Path, up_port: int, workers: int = 1, store_url: str | None = None,
                 pg_password: str | None = None) -> None:
        self.tmp, self.port = tmp, free_port()
        self.db = tmp / f"chaos-{self.port}.db"
        self.store_url = store_url or f"sqlite:///{self.db}"
        store = {"url": self.store_url}
        env = {**os.environ}
        if pg_password:
            store["password_env"] = "CHAOS_PG_PASSWORD"
            env["CHAOS_PG_PASSWORD"] = pg_password
        cfg = tmp / f"chaos-{self.port}.yaml"
        cfg.write_text(yaml.safe_dump({
            "models": {"m": {"provider": "openai", "base_url": f"http://127.0.0.1:{up_port}/v1", "retries": 2,
                             "price": {"input": 1, "output": 1}, "timeout": {"connect": 1, "read": 5}}},
            "client_keys": [{"name": "chaos", "key": KEY}],
            "store": store,
        }))
        cmd = [sys.executable, "-m", "gearshift.cli", "serve", "--config", str(cfg), "--port", str(self.port),
               "--log-level", "ERROR"]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                     start_new_session=True)
        asyncio.run(wait_ready(f"http://127.0.0.1:{self.port}/health"))
        if workers > 1:
            deadline = time.monotonic() + 30
            while len(_children(self.proc.pid)) < workers and time.monotonic() < deadline:
                time.sleep(0.05)

    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    def ids(self) -> set[str]:
        with sqlite3.connect(self.db) as c:
            return {r[0] for r in c.execute("SELECT id FROM traces")}

    def wait(self, timeout: float = 60) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop(self.proc)


def fault_after(delay: float, action: Callable[[], None]) -> asyncio.Task[None]:
    async def run() -> None:
        await asyncio.sleep(delay)
        await asyncio.to_thread(action)
    return asyncio.ensure_future(run())


def run_fault(seconds: float, gw: Gateway, at: float, action: Callable[[], None],
              stop_on_refused: bool = False) -> tuple[Tally, float, float]:
    tally = Tally()
    rss_before = gw.rss()
    rss_after = [0.0]

    def act() -> None:
        rss_after[0] = gw.rss()
        action()

    async def go() -> None:
        task = fault_after(at, act)
        await load(gw.port, seconds, tally, stop_on_refused)
        await task
    asyncio.run(go())
    if gw.proc.poll() is None:
        rss_after[0] = gw.rss()
    return tally, rss_before, rss_after[0]


def report(name: str, tally: Tally, found: set[str] | None, rss: tuple[float, float], note: str = "") -> None:
    lost = "n/a" if found is None else str(len(tally.ids - found))
    share = tally.failed / tally.sent * 100 if tally.sent else 0.0
    print(f"{name:<26} sent {tally.sent:>6}  answered {tally.answered:>6}  failed {tally.failed:>5} ({share:5.2f}%)  "
          f"refused {tally.refused:>4}  traces lost {lost:>4}  RSS {rss[0]:.0f} -> {rss[1]:.0f} MB  {note}",
          flush=True)


def post_fault(up_port: int, mode: str, seconds: float) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{up_port}/fault",
                                                        json={"mode": mode, "seconds": seconds}) as r:
            await r.read()
    asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.upstream:
        upstream(args.upstream)
        return
    T = args.seconds
    tmp = Path(tempfile.mkdtemp(prefix="gearshift-chaos-"))
    up_port = free_port()
    up = start([sys.executable, __file__, "--upstream", str(up_port)])
    pg: Pg | None = None
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{up_port}/v1/models"))
        print(f"concurrency {CONCURRENCY}, {T:g} s of load per fault; store flush interval 0.2 s\n", flush=True)

        # 1. Upstream failures: 500s for 1 s, then connection resets for 1 s (retries: 2).
        gw = Gateway(tmp, up_port)
        def upstream_fails() -> None:
            post_fault(up_port, "500", 1.0)
            time.sleep(1.0)
            post_fault(up_port, "reset", 1.0)
        tally, b, a = run_fault(T, gw, 1.0, upstream_fails)
        gw.stop()
        report("upstream 500s + resets", tally, gw.ids(), (b, a))

        # 2. A dead worker: kill -9 one of two; the master restarts it.
        gw = Gateway(tmp, up_port, workers=2)
        victim = int(_children(gw.proc.pid)[0])
        tally, b, a = run_fault(T, gw, 1.5, lambda: os.kill(victim, signal.SIGKILL))
        gw.stop()
        report("worker kill -9 (of 2)", tally, gw.ids(), (b, a),
               "port refused: " + ("never" if not tally.refused else f"{tally.refused} connections"))

        try:
            pg = Pg()
        except Exception as e:  # noqa: BLE001 - any reason PostgreSQL cannot run here
            print(f"store outage: skipped ({e})", flush=True)

        # 3. Store outage: PostgreSQL stopped for 2 s under load, then back; SIGTERM after the load.
        if pg is not None:
            url = pg.database()
            gw = Gateway(tmp, up_port, store_url=url, pg_password=pg.server.password)
            def outage() -> None:
                pg.down()
                time.sleep(2.0)
                pg.up()
            tally, b, a = run_fault(T, gw, 1.0, outage)
            gw.stop()
            report("store down 2 s (pg)", tally, pg.ids(url), (b, a))

        # 4. SIGTERM under load: in-flight requests finish, every answered trace is written.
        gw = Gateway(tmp, up_port)
        tally, b, a = run_fault(T, gw, 2.0, lambda: os.kill(gw.proc.pid, signal.SIGTERM), stop_on_refused=True)
        code = gw.wait()
        report("SIGTERM under load", tally, gw.ids(), (b, a), f"exit code {code}")

        # 5. SIGTERM under load with the store down: what is held at shutdown, and what survives.
        if pg is not None:
            url = pg.database()
            gw = Gateway(tmp, up_port, store_url=url, pg_password=pg.server.password)
            def down_then_term() -> None:
                pg.down()
                time.sleep(1.0)
                os.kill(gw.proc.pid, signal.SIGTERM)
            tally, b, a = run_fault(T, gw, 1.0, down_then_term, stop_on_refused=True)
            t0 = time.monotonic()
            code = gw.wait(60)
            waited = time.monotonic() - t0
            spilled = sum(len(f.read_bytes().splitlines()) for f in tmp.glob("gearshift-spill.*.jsonl"))
            pg.up()
            time.sleep(0.5)
            # The next gateway to start on the same spill path writes what the stopped one kept.
            again = Gateway(tmp, up_port, store_url=url, pg_password=pg.server.password)
            deadline = time.monotonic() + 30
            while list(tmp.glob("gearshift-spill.*")) and time.monotonic() < deadline:
                time.sleep(0.1)
            again.stop()
            report("SIGTERM, store down (pg)", tally, pg.ids(url), (b, a),
                   f"exit code {code} after {waited:.1f} s; {spilled} traces spilled, written by the next start")

        # 6. kill -9 of the whole server: loss bounded by what the writer had not flushed (0.2 s).
        gw = Gateway(tmp, up_port)
        tally, b, a = run_fault(T, gw, 2.0, lambda: os.killpg(gw.proc.pid, signal.SIGKILL), stop_on_refused=True)
        gw.wait()
        rate = tally.answered / 2.0
        report("kill -9 server", tally, gw.ids(), (b, a), f"~{rate * 0.2:.0f} answers per 0.2 s flush window")
    finally:
        stop(up)
        if pg is not None:
            pg.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
