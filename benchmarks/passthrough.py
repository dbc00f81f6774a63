"""A bare aiohttp pass-through proxy: the floor of any Python gateway's added latency on this machine.

    python benchmarks/passthrough.py PORT UPSTREAM_URL [--wire]

With `--wire` its upstream call goes through gearshift's own client (`providers/wire.py`) instead of
aiohttp's: a pass-through as lean as gearshift's upstream call, so that the ratio to it is gearshift's own
request path alone.
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web


def main(port: int, upstream: str, wire: bool = False) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    session: aiohttp.ClientSession | None = None
    lean = None
    if wire:
        from gearshift.providers.wire import Wire

        lean = Wire()

    async def start(app: web.Application) -> None:
        nonlocal session
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def stop(app: web.Application) -> None:
        if session is not None:
            await session.close()

    async def chat(request: web.Request) -> web.Response:
        assert session is not None
        body = await request.read()
        if lean is not None:
            reply = await lean.post(upstream + "/v1/chat/completions", body, {"Content-Type": "application/json"})
            return web.Response(body=reply.body, status=reply.status, content_type="application/json")
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
    main(int(sys.argv[1]), sys.argv[2], "--wire" in sys.argv[3:])
