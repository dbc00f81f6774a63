"""A real OTLP/HTTP trace receiver: an aiohttp server on 127.0.0.1 that decodes each protobuf
`ExportTraceServiceRequest` (opentelemetry-proto) into plain span records for assertions."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

SERVER, CLIENT, INTERNAL = 2, 3, 1  # opentelemetry.proto.trace.v1.Span.SpanKind values
ERROR = 2  # Status.StatusCode STATUS_CODE_ERROR


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


@dataclass
class Span:
    """One received span; ids are hex, as in a `traceparent` header."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start: int  # epoch ns
    end: int
    status: int
    attributes: dict[str, Any] = field(default_factory=dict)
    service: str = ""


class OTLPReceiver:
    """Collects every span posted to /v1/traces."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.posts = 0
        self.port = 0
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """The base endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT takes it (the exporter adds /v1/traces)."""
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: web.Request) -> web.Response:
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        got = []
        for rs in msg.resource_spans:
            service = next((_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(Span(s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.kind,
                                    s.start_time_unix_nano, s.end_time_unix_nano, s.status.code,
                                    {a.key: _value(a.value) for a in s.attributes}, service))
        with self._lock:
            self.spans.extend(got)
            self.posts += 1
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def wait(self, n: int, timeout: float = 10.0, name: str | None = None) -> list[Span]:
        """The spans received (those named `name`, when given) once at least `n` have arrived."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                got = [s for s in self.spans if name is None or s.name == name]
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.02)

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[OTLPReceiver]:
        """Serve in a background thread with its own event loop."""
        rec = cls()
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/traces", rec._traces)
        runner = web.AppRunner(app, access_log=None)
        ready = threading.Event()

        async def start() -> None:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            rec.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        thread = threading.Thread(target=serve, name="otlp-receiver", daemon=True)
        thread.start()
        assert ready.wait(30), "the OTLP receiver did not start"
        try:
            yield rec
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
