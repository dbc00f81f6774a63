"""An OTLP/HTTP trace receiver that discards what it gets: where the benchmarked gateway with
OpenTelemetry on exports to. GET /count says how many batches and bytes arrived.

    python benchmarks/otlp_sink.py PORT
"""

from __future__ import annotations

import json
import sys

from aiohttp import web


def main(port: int) -> None:
    seen = {"batches": 0, "bytes": 0}

    async def traces(request: web.Request) -> web.Response:
        seen["batches"] += 1
        seen["bytes"] += len(await request.read())
        # An empty ExportTraceServiceResponse is zero bytes of protobuf.
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def count(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(seen), content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/count", count)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main(int(sys.argv[1]))
