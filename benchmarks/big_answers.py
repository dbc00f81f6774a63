"""Resident memory of `gearshift serve` across many streamed big answers (the RSS goal of the Trust issue).

A fake upstream streams an answer of --mb MB in 16 KB chunks; the gateway streams it on to the client and
stores it (cut at store.max_answer_chars). Prints the gateway's RSS at start, after the first stream and
after every tenth, and the database size.

    python benchmarks/big_answers.py [--mb 20] [--streams 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import free_port, rss_mb, start, stop, wait_ready  # noqa: E402

CHUNK = 16 * 1024


def upstream(port: int, mb: float) -> None:
    """An OpenAI-compatible upstream whose streamed answer is `mb` MB of text."""
    piece = ("lorem ipsum " * (CHUNK // 12 + 1))[:CHUNK]
    n = int(mb * 1024 * 1024 / CHUNK)

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "bench"}
        for i in range(n):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            await resp.write(b"data: " + json.dumps({**base, "choices": [{"index": 0, "delta": delta,
                                                     "finish_reason": None}]}).encode() + b"\n\n")
        await resp.write(b"data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                                                 "usage": {"prompt_tokens": 5, "completion_tokens": n * 4}}).encode()
                         + b"\n\ndata: [DONE]\n\n")
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def one_stream(session: aiohttp.ClientSession, url: str) -> int:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "write a lot"}]}
    size = 0
    async with session.post(url, json=body) as r:
        async for data in r.content.iter_any():
            size += len(data)
    return size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=20.0)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--upstream", type=int, help=argparse.SUPPRESS)  # run as the fake upstream on this port
    args = ap.parse_args()
    if args.upstream:
        upstream(args.upstream, args.mb)
        return
    tmp = Path(tempfile.mkdtemp(prefix="gearshift-big-"))
    up_port, gs_port = free_port(), free_port()
    procs = [start([sys.executable, __file__, "--upstream", str(up_port), "--mb", str(args.mb)])]
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{up_port}/v1/models"))
        cfg = tmp / "gs.yaml"
        cfg.write_text(yaml.safe_dump({
            "models": {"m": {"provider": "openai", "base_url": f"http://127.0.0.1:{up_port}/v1",
                             "price": {"input": 1, "output": 1}, "timeout": {"read": 60}}},
            "store": {"url": f"sqlite:///{tmp / 'big.db'}"},
            "server": {"open": True},  # 127.0.0.1 only
        }))
        gw = start([sys.executable, "-m", "gearshift.cli", "serve", "--config", str(cfg), "--port", str(gs_port),
                    "--log-level", "WARNING"])
        procs.append(gw)
        asyncio.run(wait_ready(f"http://127.0.0.1:{gs_port}/health"))
        base = rss_mb(gw.pid)
        print(f"answer {args.mb:g} MB x {args.streams} streams; gateway RSS at start {base:.0f} MB", flush=True)

        async def run() -> None:
            url = f"http://127.0.0.1:{gs_port}/v1/chat/completions"
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
                t0 = time.perf_counter()
                for i in range(1, args.streams + 1):
                    await one_stream(s, url)
                    if i == 1 or i % 10 == 0:
                        print(f"after {i:>4} streams: RSS {rss_mb(gw.pid):6.0f} MB "
                              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        asyncio.run(run())
        time.sleep(1.0)  # the writer's last flush
        end = rss_mb(gw.pid)
        db = sum(p.stat().st_size for p in tmp.glob("big.db*"))
        print(f"RSS growth over baseline: {end - base:+.0f} MB (goal: within 50 MB); database {db / 1e6:.1f} MB")
    finally:
        for p in reversed(procs):
            stop(p)
    print(f"(files in {tmp})")
    os.sync()


if __name__ == "__main__":
    main()
