"""A bare aiohttp pass-through proxy: the floor of any Python gateway's added latency on this machine.

    python benchmarks/passthrough.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web


def main(port: int, upstream: str) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    session: aiohttp.ClientSession | None = None

    async def start(app: web.Application) -> None:
        nonlocal session
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def stop(app: web.Application) -> None:
        if session is not None:
            await session.close()

    async def chat(request: web.Request) -> web.Response:
        assert session is not None
        body = await request.read()
        async with session.post(upstream + "/v1/chat/completions", data=body,
                                headers={"Content-Type": "application/json"}) as r:
            data = await r.read()
        return web.Response(body=data, status=r.status, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
