"""The HTTP API: every client-facing API (gateway/dialects) through one pipeline, /v1/models, /health, /metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gearshift.config import Config
from gearshift.errors import (
    BadRequest,
    ConfigError,
    Forbidden,
    GearshiftError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UpstreamError,
)
from gearshift.gateway.dialects import DIALECTS, Dialect
from gearshift.gateway.dialects.chat import ChatDialect
from gearshift.gateway.executor import Answer, Executor
from gearshift.gateway.feedback import parse_feedback
from gearshift.gateway.retention import RetentionLoop
from gearshift.gateway.shadow import Shadower
from gearshift.gateway.versions import VersionLoop
from gearshift.jsonfast import dumps, loads
from gearshift.plan import Plan
from gearshift.plan import of as plan_of
from gearshift.providers import build_provider
from gearshift.request import MAX_DEPTH, ChatRequest, too_deep
from gearshift.route import Route, Step
from gearshift.routers import Router
from gearshift.store import open_store
from gearshift.store.base import TraceStore
from gearshift.store.writer import TraceWriter
from gearshift.trace import Trace
from gearshift.watch import CONTENT_TYPE, Counters, WatchLoop, render_metrics

log = logging.getLogger("gearshift.gateway")

DIRECT = "direct"  # the router name recorded when a request names a model, bypassing routing

# What writing to a client that has gone raises: OSError's ConnectionError family (reset, broken pipe,
# aborted; aiohttp's ClientConnectionResetError is one) and aiohttp's own ClientConnectionError.
CLIENT_GONE = (ConnectionError, aiohttp.ClientConnectionError)
CLIENT_CLOSED = "client closed the connection"

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway")
CHAT = ChatDialect()  # the default dialect: /v1/models, /v1/feedback and /metrics take OpenAI's keys and errors


def _header_safe(text: str, limit: int = 300) -> str:
    """Header values must be one line of latin-1; reasons may carry user text (regex hits, tiers)."""
    text = " ".join(text.split())
    return text.encode("ascii", "replace").decode("ascii")[:limit]


class Gateway:
    """Routers, providers, executor and trace writer of one running gateway."""

    def __init__(self, config: Config | Plan, store: TraceStore | None = None) -> None:
        # A Config is checked and built here, through the same door as `check-config`.
        self.plan = plan_of(config)
        config = self.config = self.plan.config
        self.routers: dict[str, Router[Any]] = dict(self.plan.routers)
        self.store = store or open_store(config.store, config.base_dir)
        spill = config.store.spill_path and Path(config.base_dir) / config.store.spill_path
        self.writer = TraceWriter(self.store, config.store.batch_size, config.store.flush_interval,
                                  config.store.queue_size, spill)
        self.counters = Counters()
        self.watch = WatchLoop(self.store, config, self.counters) if config.watch.enabled else None
        self.keys = [(k.name, (k.secret() or "").encode()) for k in config.client_keys]
        self.session: aiohttp.ClientSession | None = None
        self.executor: Executor | None = None
        self.shadower: Shadower | None = None
        self.versions: VersionLoop | None = None
        self.retention = RetentionLoop(config, self.store)
        # trace id -> the client key that made it, for feedback that names a trace not yet flushed
        self.recent: OrderedDict[str, str | None] = OrderedDict()
        self.admins = {k.name for k in config.client_keys if k.admin}
        self.started = time.time()
        self.requests = 0
        # The plan refused missing secrets; the environment may have changed since it was built.
        key_env = config.server.metrics_key_env
        # plan.build refused a named variable that is not set: None here means "open by choice".
        self.metrics_key = os.environ.get(key_env, "").encode() if key_env else None
        self.unauthenticated = 0  # requests refused for a missing or wrong key (they leave no trace)
        missing = [k.name for k in config.client_keys if not k.secret()]
        if missing:
            raise ConfigError(f"client_keys: no secret in the environment for {', '.join(missing)}; "
                              "fix: set their key_env variables")
        if not self.keys:
            log.warning("server.open: the gateway serves without authentication")

    async def start(self, app: web.Application | None = None) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, ttl_dns_cache=300, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        providers = {name: build_provider(m, self.session, self.config.base_dir) for name, m in self.config.models.items()}
        self.executor = Executor(self.config, providers)
        for router in self.routers.values():
            router.attach(self.executor)  # what the executor lends: model calls (judges), latencies (budgets)
        self.shadower = Shadower(self.config, providers, self.writer, self.counters)
        if self.shadower.budgeted:
            await asyncio.to_thread(self.shadower.sync_spend)
        self.shadower.start()
        if self.watch is not None:
            await self.watch.start()
        self.versions = VersionLoop(self.config, self.routers, self.store)
        await self.versions.poll()  # promoted thresholds apply before the first request
        self.versions.start()
        self.retention.start()

    async def stop(self, app: web.Application | None = None) -> None:
        await self.retention.stop()
        if self.watch is not None:
            await self.watch.stop()
        if self.versions is not None:
            await self.versions.stop()
        if self.shadower is not None:
            await self.shadower.stop()
        if self.executor is not None:
            for p in self.executor.providers.values():
                await p.close()
        if self.session is not None:
            await self.session.close()
        # With a spill file a down store costs the stop only a short wait: nothing is lost either way.
        self.writer.close(timeout=5.0 if self.writer.spill is not None else 30.0)
        self.store.close()

    # -- requests --------------------------------------------------------------------------

    def authenticate(self, request: web.Request, dialect: Dialect = CHAT) -> str | None:
        """The name of the client key the request carries (None when the gateway is open)."""
        if not self.keys:
            return None
        token = dialect.token(request.headers)
        found = None
        for name, secret in self.keys:
            # Compare against every key so timing does not reveal which one matched.
            if hmac.compare_digest(token, secret):
                found = name
        if found is None:
            raise Unauthorized(f"missing or invalid API key: send {dialect.key_hint}")
        return found

    def resolve(self, req: ChatRequest) -> tuple[Router | None, Route]:
        name = req.model or (self.config.server.default_router or "")
        router = self.routers.get(name)
        if router is not None:
            return router, router.route(req)
        if name in self.config.models:
            return None, Route(steps=[Step(name)], router=DIRECT, reason=f"model {name} named directly (no routing)")
        known = sorted(self.routers) + sorted(self.config.models)
        if not name:
            raise BadRequest("`model` is required (no server.default_router is configured)", param="model")
        raise NotFound(f"the model {name!r} does not exist: name a router or a model: {', '.join(known)}",
                       param="model")

    def _unauthenticated(self, e: GearshiftError, dialect: Dialect = CHAT) -> web.Response:
        """A request without a valid key: counted, never traced (anyone could fill the store)."""
        self.unauthenticated += 1
        return web.Response(status=e.status, body=dialect.error(e), content_type="application/json")

    def handler(self, dialect: Dialect) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The aiohttp handler of one API: the one pipeline, in that API's dialect."""

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.serve(request, dialect)

        return handle

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/chat/completions."""
        return await self.serve(request, CHAT)

    async def serve(self, request: web.Request, dialect: Dialect) -> web.StreamResponse:
        """Every API's request: key, parse, route, execute (streamed or whole), answer, trace, shadow."""
        t0 = time.perf_counter()
        self.requests += 1
        try:
            client = self.authenticate(request, dialect)
        except Unauthorized as e:
            return self._unauthenticated(e, dialect)
        trace = Trace(router="", requested_model="", client=client, endpoint=dialect.kind)
        try:
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise PayloadTooLarge(f"request body is larger than {self.config.server.max_body_bytes} bytes") from None
            try:
                body = loads(raw)
            except ValueError as e:
                raise BadRequest(f"request body is not valid JSON: {e}") from None
            if too_deep(raw, body):
                raise BadRequest(f"request body nests arrays and objects deeper than {MAX_DEPTH} levels")
            req = dialect.parse(body, request.headers, client)
            trace.requested_model, trace.metadata = req.model, req.metadata
            trace.streamed = req.stream
            router, route = self.resolve(req)
            trace.router, trace.reason, trace.route, trace.score = route.router, route.reason, route.models(), route.score
            trace.arm = route.arm
            trace.estimated_tokens = req.estimated_tokens()
            if self.config.store.record_content:
                trace.prompt = req.text()
            assert self.executor is not None
            if req.stream:
                return await self._stream(request, dialect, req, route, trace, t0)
            outcome = await dialect.run(self.executor, route, req, trace)
            assert outcome.completion is not None
            trace.final_model = outcome.model
            if self.config.store.record_content:
                trace.response = outcome.completion.text
            trace.latency_ms = (time.perf_counter() - t0) * 1000
            response = web.Response(body=dialect.render(outcome.completion, req, trace), content_type="application/json",
                                    headers=self._headers(trace, route, outcome))
            if dialect.shadow:
                assert self.shadower is not None
                self.shadower.offer(req, trace, outcome.completion.text, outcome.completion.body)
            return response
        except GearshiftError as e:
            return self._error(e, trace, t0, dialect)
        except CLIENT_GONE:  # e.g. while a stream's headers were sent: the client's doing, no stack trace
            trace.status, trace.error = 499, CLIENT_CLOSED
            trace.latency_ms = (time.perf_counter() - t0) * 1000
            return web.Response(status=499)
        except Exception:
            log.exception("internal error in trace %s", trace.id)
            err = GearshiftError(f"internal error (trace {trace.id})")
            return self._error(err, trace, t0, dialect)
        finally:
            self._remember(trace.id, trace.client)
            trace.cap_answers(self.config.store.max_answer_chars)
            self.writer.put(trace)
            self.counters.observe(trace)

    def _headers(self, trace: Trace, route: Route, outcome: Answer | None, cost: str | None = None) -> dict[str, str]:
        reason = route.reason + ("; " + "; ".join(outcome.notes) if outcome and outcome.notes else "")
        headers = {
            "x-gearshift-model": outcome.model if outcome else "",
            "x-gearshift-router": trace.router,
            "x-gearshift-reason": _header_safe(reason),
            "x-gearshift-cost-usd": cost if cost is not None else f"{trace.cost_usd:.8f}",
            "x-gearshift-trace-id": trace.id,
        }
        if outcome is not None and outcome.dropped:  # a model with drop_params dropped or clamped these
            headers["x-gearshift-dropped-params"] = ",".join(outcome.dropped)
        return headers

    def _error(self, e: GearshiftError, trace: Trace, t0: float, dialect: Dialect = CHAT) -> web.Response:
        trace.status, trace.error = e.status, e.message
        trace.latency_ms = (time.perf_counter() - t0) * 1000
        headers = {"x-gearshift-trace-id": trace.id, "x-gearshift-router": trace.router,
                   "x-gearshift-cost-usd": f"{trace.cost_usd:.8f}", **e.headers()}
        return web.Response(status=e.status, body=dialect.error(e), content_type="application/json",
                            headers=headers)

    async def _stream(self, request: web.Request, dialect: Dialect, req: ChatRequest, route: Route, trace: Trace,
                      t0: float) -> web.StreamResponse:
        assert self.executor is not None
        outcome = await self.executor.open_stream(route, req, trace)  # raises before anything is sent
        assert outcome.stream is not None
        trace.final_model = outcome.model
        render = dialect.streamer(req, trace)
        # The streamed call's cost is known only at the end: the dialect's tail may carry it.
        resp = web.StreamResponse(headers={**self._headers(trace, route, outcome, cost="pending"),
                                           "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        error: UpstreamError | None = None
        try:
            head = render.head()
            if head:
                await resp.write(head)
            async for chunk in outcome.stream:
                data = render.chunk(chunk)
                if data:
                    await resp.write(data)
        except UpstreamError as e:
            error = e
            trace.status, trace.error = e.status, e.message
            await resp.write(render.error(e))
        except CLIENT_GONE:
            trace.status, trace.error = 499, CLIENT_CLOSED
        finally:
            await outcome.stream.aclose()
            self.executor.finish_stream(outcome, trace, error)
            trace.latency_ms = (time.perf_counter() - t0) * 1000
            if self.config.store.record_content:
                trace.response = outcome.stream.text
        if trace.status != 499:
            try:
                await resp.write(render.tail(trace, outcome.model, outcome.stream.usage))
                await resp.write_eof()
            except CLIENT_GONE:  # the answer was complete, only its trailer was lost
                trace.status, trace.error = 499, CLIENT_CLOSED
        if trace.status == 200 and dialect.shadow and self.shadower is not None:
            self.shadower.offer(req, trace, outcome.stream.text, None)
        return resp

    def _remember(self, trace_id: str, client: str | None, keep: int = 50_000) -> None:
        self.recent[trace_id] = client
        if len(self.recent) > keep:
            self.recent.popitem(last=False)

    async def feedback(self, request: web.Request) -> web.Response:
        """POST /v1/feedback {trace_id, score | thumbs | rating (+ scale), source?, comment?}."""
        try:
            client = self.authenticate(request)
        except Unauthorized as e:
            return self._unauthenticated(e)
        try:
            try:
                body = loads(await request.read())
            except ValueError as e:
                raise BadRequest(f"request body is not valid JSON: {e}") from None
            fb = parse_feedback(body)
            if fb.trace_id in self.recent:
                known, owner = True, self.recent[fb.trace_id]
            else:
                known, owner = await asyncio.to_thread(self.store.trace_client, fb.trace_id)
            if not known:
                raise NotFound(f"no trace with id {fb.trace_id!r}", param="trace_id", code="trace_not_found")
            if client is not None and client != owner and client not in self.admins:
                # Answer as for a trace that does not exist would leak less, but a 403 tells an honest
                # application what is wrong; trace ids are unguessable, so it confirms nothing useful.
                raise Forbidden(f"the key {client!r} did not make request {fb.trace_id!r}: only that key, or a key "
                                "with `admin: true`, may write its feedback", param="trace_id")
            await asyncio.to_thread(self.store.write_feedback, fb.trace_id, fb.score, fb.label, fb.source, fb.comment,
                                    client)
        except GearshiftError as e:
            return web.Response(status=e.status, body=dumps(e.to_json()), content_type="application/json")
        return web.Response(body=dumps({"object": "feedback", "trace_id": fb.trace_id, "score": fb.score}),
                            content_type="application/json")

    def _model_entries(self) -> dict[str, dict[str, Any]]:
        """Every router and model as OpenAI's `model` object, by name (routers first)."""
        created = int(self.started)
        entries = {name: {"id": name, "object": "model", "created": created, "owned_by": "gearshift",
                          "gearshift": {"kind": r.kind, "models": r.models()}} for name, r in self.routers.items()}
        for name, m in self.config.models.items():
            entries.setdefault(name, {"id": name, "object": "model", "created": created, "owned_by": m.provider,
                                      "gearshift": {"rank": m.rank, "price": m.price.model_dump(),
                                                    "context_window": m.context_window}})
        return entries

    async def models(self, request: web.Request) -> web.Response:
        """GET /v1/models: the routers and models a request may name."""
        try:
            self.authenticate(request)
        except Unauthorized as e:
            return self._unauthenticated(e)
        data = list(self._model_entries().values())
        return web.Response(body=dumps({"object": "list", "data": data}), content_type="application/json")

    async def model(self, request: web.Request) -> web.Response:
        """GET /v1/models/{id}: one router or model (ids may hold slashes: `gearshift/auto`)."""
        try:
            self.authenticate(request)
        except Unauthorized as e:
            return self._unauthenticated(e)
        name = request.match_info["id"]
        entry = self._model_entries().get(name)
        if entry is None:
            err = NotFound(f"the model {name!r} does not exist: name a router or a model: "
                           f"{', '.join(self._model_entries())}", param="model")
            return web.Response(status=404, body=dumps(err.to_json()), content_type="application/json")
        return web.Response(body=dumps(entry), content_type="application/json")

    def _may_see_details(self, request: web.Request) -> bool:
        """Whether the request may read /metrics and the detailed /health (always, with no metrics key)."""
        if self.metrics_key is None:
            return True
        return hmac.compare_digest(CHAT.token(request.headers), self.metrics_key)

    async def livez(self, request: web.Request) -> web.Response:
        """Liveness only: open to any prober, whatever the metrics key."""
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def health(self, request: web.Request) -> web.Response:
        """Liveness for anyone; the details (routers, traces, shadow spend) for the metrics key's holders."""
        if not self._may_see_details(request):
            return await self.livez(request)
        sh = self.shadower
        circuits = self.executor.breakers.snapshot() if self.executor is not None else {}
        states = self.versions.states() if self.versions is not None else {}
        routers = {name: {"kind": r.kind, **states.get(name, {})} for name, r in self.routers.items()}
        body = {"status": "ok", "routers": routers, "models": circuits,
                "traces_pending": self.writer.pending(), "traces_written": self.writer.written,
                "traces_updated": self.writer.updated,
                "traces_failed": self.writer.failed, "traces_dropped": self.writer.dropped,
                "shadow": {"queued": sh.queue.qsize(), "done": sh.done, "dropped": dict(sh.dropped),
                           "spent_today_usd": sh.spent_today(),
                           "spent_today_usd_by_router": {r: sh.spent_today(r) for r in sh.policies}} if sh else None,
                "uptime_s": round(time.time() - self.started, 1), "pid": os.getpid()}
        return web.Response(body=dumps(body), content_type="application/json")

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text: request counters, shadow counters and the watch's last report."""
        if not self._may_see_details(request):
            return self._unauthenticated(Unauthorized("/metrics requires the metrics key: send "
                                                      "`Authorization: Bearer <key>`"))
        if self.shadower is not None:
            self.counters.sync_shadow_dropped(self.shadower.dropped)
        w = self.writer
        gauges = {"gearshift_traces_pending": ("Traces queued or held for the store.", w.pending())}
        totals = {"gearshift_traces_written_total": ("Traces written to the store.", w.written),
                  "gearshift_traces_updated_total": ("Writes of a trace written before (its shadow pair added).",
                                                     w.updated),
                  "gearshift_traces_failed_total": ("Traces the store refused, or lost at shutdown.", w.failed),
                  "gearshift_traces_dropped_total": ("Traces not kept: store.queue_size were waiting.", w.dropped),
                  "gearshift_unauthenticated_requests_total": ("Requests refused for a missing or wrong key "
                                                               "(they leave no trace).", self.unauthenticated)}
        report = self.watch.report if self.watch is not None else None
        circuits = self.executor.breakers.snapshot() if self.executor is not None else None
        states = self.versions.states() if self.versions is not None else None
        return web.Response(body=render_metrics(self.counters, report, gauges, totals, circuits, states).encode(),
                            headers={"Content-Type": CONTENT_TYPE})

    async def not_found(self, request: web.Request) -> web.Response:
        allowed = ALLOWED_METHODS.get(request.path)
        if allowed is not None:
            wrong = MethodNotAllowed(f"{request.method} is not allowed on {request.path}: use {allowed}")
            return web.Response(status=405, body=dumps(wrong.to_json()), content_type="application/json",
                                headers={"Allow": allowed})
        err = NotFound(f"no route for {request.method} {request.path}")
        err.code = "not_found"
        return web.Response(status=404, body=dumps(err.to_json()), content_type="application/json")


# The known paths (create_app routes them) and their methods: another method on one gets a 405.
ALLOWED_METHODS = {"/v1/models": "GET, HEAD", "/v1/feedback": "POST", "/health": "GET, HEAD", "/metrics": "GET, HEAD",
                   "/livez": "GET, HEAD", **{path: "POST" for kind in DIALECTS for path in DIALECTS[kind].paths}}


def create_app(config: Config | Plan, store: TraceStore | None = None) -> web.Application:
    """The aiohttp application of a gateway (its lifecycle starts and stops the gateway)."""
    gw = Gateway(config, store)
    app = web.Application(client_max_size=gw.config.server.max_body_bytes)
    app[GATEWAY_KEY] = gw
    app.on_startup.append(gw.start)
    app.on_cleanup.append(gw.stop)
    for kind in DIALECTS:  # every API through the one pipeline (gateway/dialects: one module each)
        dialect = DIALECTS[kind]()
        for path in dialect.paths:
            app.router.add_post(path, gw.chat if dialect.kind == CHAT.kind else gw.handler(dialect))
    app.router.add_get("/v1/models", gw.models)
    app.router.add_get("/v1/models/{id:.+}", gw.model)
    app.router.add_post("/v1/feedback", gw.feedback)
    app.router.add_get("/health", gw.health)
    app.router.add_get("/metrics", gw.metrics)
    app.router.add_get("/livez", gw.livez)
    app.router.add_route("*", "/{tail:.*}", gw.not_found)
    return app
