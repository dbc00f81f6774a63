"""The HTTP API: every client-facing API (gateway/dialects) through one pipeline, /v1/models, /health, /metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gearshift import logs, telemetry
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
from gearshift.gateway import admin
from gearshift.gateway.cache import Assembled, Hit, Lookup, ResponseCache
from gearshift.gateway.dialects import DIALECTS, Dialect
from gearshift.gateway.dialects.chat import ChatDialect
from gearshift.gateway.executor import Answer, CompletionStream, Executor
from gearshift.gateway.feedback import parse_feedback
from gearshift.gateway.keys import KeyRing, authenticate, day_and_month_start
from gearshift.gateway.limits import Admission, Limiter
from gearshift.gateway.reload import FileWatch, restart_only
from gearshift.gateway.retention import RetentionLoop
from gearshift.gateway.shadow import Shadower
from gearshift.gateway.summary import summarise_by
from gearshift.gateway.versions import VersionLoop
from gearshift.jsonfast import dumps, loads
from gearshift.plan import Plan, key_secret
from gearshift.plan import load as load_plan
from gearshift.plan import of as plan_of
from gearshift.principal import Principal, config_keys
from gearshift.providers import build_provider
from gearshift.providers.base import Provider
from gearshift.request import MAX_DEPTH, ChatRequest, too_deep
from gearshift.route import Route, Step
from gearshift.routers import Router
from gearshift.store import open_store
from gearshift.store.base import TraceStore
from gearshift.store.process import ProcessWriter
from gearshift.store.writer import TraceWriter, Writer, stop_timeout
from gearshift.trace import Trace
from gearshift.watch import CONTENT_TYPE, Counters, WatchLoop, render_metrics
from gearshift.watch.peers import PUBLISH_SECONDS, Combined, Peers, combine

log = logging.getLogger("gearshift.gateway")
access_log = logging.getLogger("gearshift.access")

DIRECT = "direct"  # the router name recorded when a request names a model, bypassing routing

# What writing to a client that has gone raises: OSError's ConnectionError family (reset, broken pipe,
# aborted; aiohttp's ClientConnectionResetError is one) and aiohttp's own ClientConnectionError.
CLIENT_GONE = (ConnectionError, aiohttp.ClientConnectionError)
CLIENT_CLOSED = "client closed the connection"

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway")
LIMITS: web.RequestKey[Admission | None] = web.RequestKey("admission")  # the request's Admission: its x-ratelimit-* headers go on whatever answers it
CHAT = ChatDialect()  # the default dialect: /v1/models, /v1/feedback and /metrics take OpenAI's keys and errors

# The gateway's own counts in /metrics: the snapshot's key -> (family, help). Totals are counters.
TOTALS = {
    "traces_written": ("gearshift_traces_written_total", "Traces written to the store."),
    "traces_updated": ("gearshift_traces_updated_total", "Writes of a trace written before (its shadow pair added)."),
    "traces_failed": ("gearshift_traces_failed_total", "Traces the store refused, or lost at shutdown."),
    "traces_dropped": ("gearshift_traces_dropped_total", "Traces not kept: store.queue_size were waiting."),
    "unauthenticated": ("gearshift_unauthenticated_requests_total",
                        "Requests refused for a missing or wrong key (they leave no trace)."),
    "reloads_ok": ("gearshift_config_reloads_total", "Config reloads swapped in."),
    "reloads_failed": ("gearshift_config_reload_failures_total",
                       "Config reloads refused (the config loaded before kept serving)."),
    "cache_store_failures": ("gearshift_cache_store_failures_total",
                             "Shared response cache reads and writes the store failed (served as misses)."),
}
GAUGES = {"traces_pending": ("gearshift_traces_pending", "Traces queued or held for the store.")}


# A router gives most requests one of a few reasons: each is made header-safe once.
@lru_cache(maxsize=1024)
def _header_safe(text: str, limit: int = 300) -> str:
    """Header values must be one line of latin-1; reasons may carry user text (regex hits, tiers)."""
    text = " ".join(text.split())
    return text.encode("ascii", "replace").decode("ascii")[:limit]


class Live:
    """What one plan serves with. A reload swaps the whole of it at once; a request keeps the one it
    started on to its end (its route's models stay those its executor knows)."""

    __slots__ = ("plan", "executor", "keys", "metrics_key", "in_flight")

    def __init__(self, plan: Plan, executor: Executor | None = None) -> None:
        config = plan.config
        self.plan = plan
        self.executor = executor
        self.keys = config_keys(config)
        key_env = config.server.metrics_key_env
        # plan.build refused a named variable that is not set: None here means "open by choice".
        self.metrics_key = os.environ.get(key_env, "").encode() if key_env else None
        self.in_flight = 0
        missing = [k.name for k in config.client_keys if not k.secret()]
        if missing:
            raise ConfigError(f"client_keys: no secret in the environment for {', '.join(missing)}; "
                              "fix: set their key_env variables")

    @property
    def config(self) -> Config:
        return self.plan.config

    @property
    def routers(self) -> Mapping[str, Router[Any]]:
        return self.plan.routers


def _writer(config: Config, store: TraceStore, own_store: bool) -> Writer:
    """The trace writer `store.writer` asks for. A store handed in (tests, the simulation) and an in-memory
    SQLite cannot be opened a second time, by a child: those get the thread."""
    c = config.store
    spill = Path(config.base_dir) / c.spill_path if c.spill_path else None
    if c.writer == "process" and own_store and not c.url.endswith(":memory:"):
        return ProcessWriter(store, c.url, config.base_dir, c.password_env, c.batch_size, c.flush_interval,
                             c.queue_size, spill)
    return TraceWriter(store, c.batch_size, c.flush_interval, c.queue_size, spill)


class Gateway:
    """Routers, providers, executor and trace writer of one running gateway."""

    def __init__(self, config: Config | Plan, store: TraceStore | None = None,
                 workers_dir: str | Path | None = None, clock: Any = time.time) -> None:
        # A Config is checked and built here, through the same door as `check-config`.
        self.live = Live(plan_of(config))
        config = self.live.config
        self.store = store or open_store(config.store, config.base_dir)
        self.writer = _writer(config, self.store, own_store=store is None)
        self.cache = ResponseCache(self.store, clock)
        self.counters = Counters()
        # With several worker processes: where each publishes its counts, so any one answers for all.
        self.peers = Peers(workers_dir) if workers_dir is not None else None
        self._publisher: asyncio.Task[None] | None = None
        self.watch = WatchLoop(self.store, config, self.counters, clock=clock) if config.watch.enabled else None
        self.session: aiohttp.ClientSession | None = None
        self.shadower: Shadower | None = None
        self.versions: VersionLoop | None = None
        self.retention = RetentionLoop(config, self.store)
        self.clock = clock  # the time of traces, shadow budget days and proof schedules (the simulation's own)
        self.limiter = Limiter(self.store, clock, config.server.limits_sync_seconds, self.counters)
        # trace id -> the client key that made it, for feedback that names a trace not yet flushed
        self.recent: OrderedDict[str, str | None] = OrderedDict()
        self.started = time.time()
        self.requests = 0
        self.draining = False  # set when the server starts to stop: readiness goes first
        self.access_sample = config.server.access_log_sample
        self.unauthenticated = 0  # requests refused for a missing or wrong key (they leave no trace)
        self.reloads: Counter[str] = Counter()  # "ok" and "failed" config reloads
        self.loaded_at = time.time()
        self.file_watch: FileWatch | None = None
        self.tracing = False  # this gateway started OpenTelemetry tracing (and stops it)
        self._retiring: list[asyncio.Task[None]] = []
        secret = key_secret(config)  # virtual keys: on when server.key_secret_env is set (plan checked it)
        self.keyring = KeyRing(self.store, secret, config.server.key_cache_seconds) if secret else None
        if not self.live.keys and self.keyring is None:
            log.warning("server.open: the gateway serves without authentication")

    async def start(self, app: web.Application | None = None, background: bool = True) -> None:
        """Build the executor and shadow workers; with `background`, also start the version, watch and
        retention loops (the lab's simulation drives the first two itself, on its own clock)."""
        self.tracing = telemetry.start()  # when OTEL_* variables ask for it
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, ttl_dns_cache=300, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        providers = {name: build_provider(m, self.session, self.config.base_dir) for name, m in self.config.models.items()}
        executor = Executor(self.config, providers)
        for router in self.routers.values():
            router.attach(executor)  # what the executor lends: model calls (judges), latencies (budgets)
        self.live.executor = executor
        self.shadower = Shadower(self.config, providers, self.writer, self.counters, self.clock, self._observing)
        if self.shadower.budgeted:
            await asyncio.to_thread(self.shadower.sync_spend)
        self.shadower.start()
        await self.limiter.start(p for p, _ in self.live.keys)
        self.versions = VersionLoop(self.config, dict(self.routers), self.store, self.clock)
        await self.versions.poll()  # promoted thresholds apply before the first request
        if not background:
            return
        if self.watch is not None:
            await self.watch.start()
        self.versions.start()
        self.retention.start()
        every = self.config.server.watch_config_seconds
        if every and Path(self.plan.source).is_file():
            self.file_watch = FileWatch(self.plan.source, every, self.reload)
            self.file_watch.start()
        if self.peers is not None:
            self.peers.publish(self.snapshot())  # the others count this worker from its first second
            self._publisher = asyncio.create_task(self._publish(), name="gearshift-peers")

    # The plan's parts, as the current Live has them (a request holds its own Live instead).
    @property
    def plan(self) -> Plan:
        return self.live.plan

    @property
    def config(self) -> Config:
        return self.live.plan.config

    @property
    def routers(self) -> Mapping[str, Router[Any]]:
        return self.live.plan.routers

    @property
    def executor(self) -> Executor | None:
        return self.live.executor

    async def reload(self) -> bool:
        """Load, check and build the config file again and swap it in whole; on any problem keep serving
        the current one, log the problems as `check-config` prints them, and count a failed reload."""
        source, old = self.plan.source, self.live
        try:
            plan = await asyncio.to_thread(load_plan, source, True)
            live = Live(plan)
        except ConfigError as e:
            self.reloads["failed"] += 1
            log.error("config reload failed; still serving the config loaded before:\n%s", e)
            return False
        config = plan.config
        for key in restart_only(old.config, config):
            log.warning("config reload: %s changed; it takes effect at the next restart", key)
        assert self.session is not None and old.executor is not None
        kept = old.executor.providers
        providers = {name: kept[name] if name in kept and old.config.models.get(name) == m
                     else build_provider(m, self.session, config.base_dir) for name, m in config.models.items()}
        executor = Executor(config, providers)
        executor.latency = old.executor.latency  # observed latencies stay true of the same upstreams
        for router in plan.routers.values():
            router.attach(executor)
        versions = VersionLoop(config, dict(plan.routers), self.store, self.clock)
        await versions.poll()  # promoted versions apply to the new routers before they serve
        live.executor = executor
        self.limiter.watch(p for p, _ in live.keys)
        self.limiter.sync_seconds = config.server.limits_sync_seconds
        self.live = live  # the swap: new requests take the new plan from here on
        if self.keyring is not None:
            self.keyring.clear()  # looked-up keys take the new teams' allowances
        self.loaded_at = time.time()
        self.access_sample = config.server.access_log_sample
        if self.shadower is not None:
            self.shadower.reconfigure(config, providers)
        if self.versions is not None:
            await self.versions.stop()
        self.versions = versions
        versions.start()
        if self.watch is not None:
            await self.watch.stop()
        self.watch = WatchLoop(self.store, config, self.counters, clock=self.clock) if config.watch.enabled else None
        if self.watch is not None:
            await self.watch.start()
        retired = [p for name, p in kept.items() if providers.get(name) is not p]
        self._retiring.append(asyncio.create_task(self._retire(old, retired)))
        self.reloads["ok"] += 1
        log.info("config reloaded from %s: %d routers, %d models", source, len(plan.routers), len(config.models))
        return True

    async def _retire(self, old: Live, providers: list[Provider], wait: float = 600.0) -> None:
        """Close a replaced plan's own providers once the requests that started on it have finished."""
        deadline = time.monotonic() + wait
        while old.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for p in providers:
            await p.close()

    async def draining_starts(self, app: web.Application | None = None) -> None:
        """The server stopped listening: connections still open (keep-alive probes) read not ready."""
        self.draining = True

    async def stop(self, app: web.Application | None = None) -> None:
        self.draining = True
        if self.file_watch is not None:
            await self.file_watch.stop()
        for task in self._retiring:
            task.cancel()
        await self.retention.stop()
        if self.watch is not None:
            await self.watch.stop()
        if self.versions is not None:
            await self.versions.stop()
        if self.shadower is not None:
            await self.shadower.stop()
        await self.cache.drain()  # the shared cache's writes under way, before the store closes
        await self.limiter.stop()
        if self.executor is not None:
            for p in self.executor.providers.values():
                await p.close()
        if self.session is not None:
            await self.session.close()
        self.writer.close(timeout=stop_timeout(self.writer.spill))
        self.store.close()
        if self.tracing:
            self.tracing = False
            telemetry.stop()  # the last spans (shadow work included) are flushed
        if self._publisher is not None:
            self._publisher.cancel()
        if self.peers is not None:
            try:
                self.peers.publish(self.snapshot())  # the final counts: they stay after this worker is gone
            except OSError as e:
                log.warning("cannot publish this worker's last counts to %s: %s", self.peers.directory, e)

    async def _publish(self) -> None:
        assert self.peers is not None
        while True:
            await asyncio.sleep(PUBLISH_SECONDS)
            try:
                await asyncio.to_thread(self.peers.publish, self.snapshot())
            except OSError as e:
                log.warning("cannot publish this worker's counts to %s: %s", self.peers.directory, e)

    def snapshot(self) -> dict[str, Any]:
        """This process's counts, as the other workers add them (watch/peers.py)."""
        w, sh = self.writer, self.shadower
        if sh is not None:
            self.counters.sync_shadow_dropped(sh.dropped)
        written = w.counts()
        totals = {"traces_written": written["written"], "traces_updated": written["updated"],
                  "traces_failed": written["failed"], "traces_dropped": written["dropped"],
                  "unauthenticated": self.unauthenticated,
                  "shadow_done": sh.done if sh else 0, "reloads_ok": self.reloads["ok"],
                  "reloads_failed": self.reloads["failed"], "cache_store_failures": self.cache.store_failures}
        gauges = {"traces_pending": w.pending(), "shadow_queued": sh.queue.qsize() if sh else 0}
        circuits = self.executor.breakers.snapshot() if self.executor is not None else {}
        return {"pid": os.getpid(), "counters": self.counters.state(), "totals": totals, "gauges": gauges,
                "circuits": circuits}

    async def combined(self) -> Combined:
        """Every worker's counts: this process's live ones and the others' latest (one process: its own)."""
        others = await asyncio.to_thread(self.peers.others) if self.peers is not None else []
        return combine(self.snapshot(), others)

    # -- requests --------------------------------------------------------------------------

    async def authenticate(self, request: web.Request, dialect: Dialect = CHAT) -> Principal | None:
        """The client key the request carries: a config key, else a virtual key (None when the gateway is open)."""
        live, ring = self.live, self.keyring
        if not live.keys and ring is None:
            return None
        return await authenticate(dialect.token(request.headers), live.keys, ring, live.config.teams, dialect.key_hint)

    def resolve(self, req: ChatRequest, live: Live | None = None, principal: Principal | None = None,
                admission: Admission | None = None) -> tuple[Router | None, Route]:
        live = live or self.live
        config, routers = live.config, live.routers
        name = req.model or (config.server.default_router or "")
        router = routers.get(name)
        if principal is not None and (router is not None or name in config.models):
            self._allow(principal, name, router is not None)
        if router is not None:
            near = config.routers[name].on_budget if name in config.routers else None
            if near is not None and admission is not None and admission.budget_used >= near.at:
                # The plan checked that the target exists and has no on_budget of its own.
                router, route = routers[near.router], routers[near.router].route(req)
                route.reason = (f"budget {admission.budget_used:.0%} used ({admission.budget_of}): downshifted to "
                                f"{near.router}; {route.reason}")
                return router, route
            return router, router.route(req)
        if name in config.models:
            return None, Route(steps=[Step(name)], router=DIRECT, reason=f"model {name} named directly (no routing)")
        known = sorted(routers) + sorted(config.models)
        if not name:
            raise BadRequest("`model` is required (no server.default_router is configured)", param="model")
        raise NotFound(f"the model {name!r} does not exist: name a router or a model: {', '.join(known)}",
                       param="model")

    @staticmethod
    def _allow(principal: Principal, name: str, is_router: bool) -> None:
        """Refuse a router or model the key may not name (its `routers:` / `models:`)."""
        if principal.may_use(name, is_router):
            return
        what = "router" if is_router else "model"
        allowed = sorted((principal.routers if is_router else principal.models) or ())
        raise Forbidden(f"the key {principal.name!r} may not use the {what} {name!r}; it may use: "
                        f"{', '.join(allowed) or f'no {what} named directly'}", param="model",
                        code="model_not_allowed")

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
        live = self.live  # this request's plan, to its end, whatever a reload swaps in meanwhile
        config = live.config
        try:
            principal = await self.authenticate(request, dialect)
        except Unauthorized as e:
            return self._unauthenticated(e, dialect)
        client = principal.name if principal is not None else None
        trace = Trace(router="", requested_model="", client=client, team=principal.team if principal else None,
                      endpoint=dialect.kind, created=self.clock())
        logs.trace_id.set(trace.id)  # this handler's task only: every line it logs names the request
        span = None if telemetry.tracer is None else telemetry.open_request(
            request.headers, request.method, request.path, dialect.kind)
        live.in_flight += 1
        self.counters.in_flight += 1
        admission = None
        try:
            req = dialect.parse(await self._body(request), request.headers, client)
            trace.streamed = req.stream
            admission = request[LIMITS] = self.limiter.admit(principal, req)  # 429 past a limit or budget
            if span is not None:
                span.mark()
            route = self.route(req, trace, live, principal, admission)
            if span is not None:
                span.mark()
            lookup = self._cache_lookup(request, dialect, req, route, trace, live)
            hit = await self.cache.get(lookup) if lookup is not None else None
            if hit is not None:
                return await self._cached(request, dialect, req, route, trace, t0, live, hit)
            if req.stream:
                return await self._stream(request, dialect, req, route, trace, t0, live, lookup=lookup)
            outcome = await self.answer(req, route, trace, live, dialect)
            trace.latency_ms = (time.perf_counter() - t0) * 1000
            assert outcome.completion is not None
            response = web.Response(body=dialect.render(outcome.completion, req, trace), content_type="application/json",
                                    headers=self._headers(trace, route, outcome))
            self.cache.keep(lookup, outcome.model, outcome.completion)
            if dialect.shadow:
                self.offer_shadow(req, trace, outcome)
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
            self.limiter.settle(admission, trace)  # the real tokens and cost replace the estimate
            live.in_flight -= 1
            self.counters.in_flight -= 1
            self._remember(trace.id, trace.client)
            if span is not None:  # a stream's span ends here too: after its last chunk
                telemetry.close_request(span, trace, config.models)
            self.record(trace, config)
            if self.access_sample and random.random() < self.access_sample:
                self._access(request, trace)

    def _cache_lookup(self, request: web.Request, dialect: Dialect, req: ChatRequest, route: Route, trace: Trace,
                      live: Live) -> Lookup | None:
        """What the response cache does for a routed request (None: its router has no cache), noted in the trace."""
        rc = live.config.routers.get(route.router)
        if rc is None or rc.cache is None or not dialect.cache:
            return None
        lookup = self.cache.decide(rc.cache, route.router, route, dialect.kind, req, request.headers)
        trace.cache = lookup.result if lookup is not None else None
        return lookup

    async def _cached(self, request: web.Request, dialect: Dialect, req: ChatRequest, route: Route, trace: Trace,
                      t0: float, live: Live, hit: Hit) -> web.StreamResponse:
        """Answer from the response cache, whole or as a stream: no upstream call, no shadow; the trace
        records the hit, cost 0 and what the route's first model would have charged for the answer."""
        trace.cache = "hit"
        trace.final_model = hit.model
        usage = hit.completion.usage
        trace.cache_saved_usd = live.config.models[route.primary].price.cost(usage.input_tokens, usage.output_tokens)
        if live.config.store.record_content:
            trace.response = hit.completion.text
        notes = ["answered from the response cache"]
        if req.stream:
            outcome = Answer(model=hit.model, stream=CompletionStream(hit.completion), notes=notes)
            return await self._stream(request, dialect, req, route, trace, t0, live, opened=outcome)
        outcome = Answer(model=hit.model, completion=hit.completion, notes=notes)
        trace.latency_ms = (time.perf_counter() - t0) * 1000
        return web.Response(body=dialect.render(hit.completion, req, trace), content_type="application/json",
                            headers=self._headers(trace, route, outcome))

    # The steps of a non-streamed request, shared by the HTTP handler and the lab's simulation (which
    # calls them in-process: the same routing, execution, shadow sampling and recording).

    def route(self, req: ChatRequest, trace: Trace, live: Live | None = None,
              principal: Principal | None = None, admission: Admission | None = None) -> Route:
        """Resolve the request's router and route (one the key may use, downshifted near its budget);
        note both in the trace."""
        live = live or self.live
        trace.requested_model, trace.metadata = req.model, req.metadata
        _, route = self.resolve(req, live, principal, admission)
        trace.router, trace.reason, trace.route, trace.score = route.router, route.reason, route.models(), route.score
        trace.arm, trace.threshold = route.arm, route.threshold
        trace.estimated_tokens = req.estimated_tokens()
        if live.config.store.record_content:
            trace.prompt = req.text()
        return route

    async def answer(self, req: ChatRequest, route: Route, trace: Trace, live: Live | None = None,
                     dialect: Dialect = CHAT) -> Answer:
        """Run a route to one whole answer (as the dialect runs it), recorded in the trace."""
        live = live or self.live
        assert live.executor is not None
        outcome = await dialect.run(live.executor, route, req, trace)
        assert outcome.completion is not None
        trace.final_model = outcome.model
        if live.config.store.record_content:
            trace.response = outcome.completion.text
        return outcome

    def _observing(self, router: str) -> bool:
        """Whether a router observes now (a promotion or demotion changes it; the shadow rate follows)."""
        return getattr(self.live.routers.get(router), "mode", "serve") == "observe"

    def offer_shadow(self, req: ChatRequest, trace: Trace, outcome: Answer) -> bool:
        """Maybe shadow an answered request (never waits)."""
        assert self.shadower is not None and outcome.completion is not None
        return self.shadower.offer(req, trace, outcome.completion.text, outcome.completion.body)

    def record(self, trace: Trace, config: Config | None = None) -> None:
        """Queue the finished trace for the store and count it."""
        trace.cap_answers((config or self.config).store.max_answer_chars)
        self.writer.put(trace)
        self.counters.observe(trace)

    async def _body(self, request: web.Request) -> Any:
        """The request's JSON body, refused (413, 400) when too large, not JSON or nested too deep."""
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
        return body

    def counter(self, dialect: Dialect) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The aiohttp handler of one API's token count: keyed like its requests, answered, never traced
        (no model is called)."""

        async def count(request: web.Request) -> web.StreamResponse:
            try:
                principal = await self.authenticate(request, dialect)
            except Unauthorized as e:
                return self._unauthenticated(e, dialect)
            try:
                body = dialect.count(await self._body(request), request.headers,
                                     principal.name if principal else None)
            except GearshiftError as e:
                return web.Response(status=e.status, body=dialect.error(e), content_type="application/json")
            return web.Response(body=body, content_type="application/json")

        return count

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
        if trace.cache is not None:
            headers["x-gearshift-cache"] = trace.cache
        return headers

    def _error(self, e: GearshiftError, trace: Trace, t0: float, dialect: Dialect = CHAT) -> web.Response:
        trace.status, trace.error = e.status, e.message
        trace.latency_ms = (time.perf_counter() - t0) * 1000
        headers = {"x-gearshift-trace-id": trace.id, "x-gearshift-router": trace.router,
                   "x-gearshift-cost-usd": f"{trace.cost_usd:.8f}", **e.headers()}
        return web.Response(status=e.status, body=dialect.error(e), content_type="application/json",
                            headers=headers)

    async def _stream(self, request: web.Request, dialect: Dialect, req: ChatRequest, route: Route, trace: Trace,
                      t0: float, live: Live, lookup: Lookup | None = None,
                      opened: Answer | None = None) -> web.StreamResponse:
        """Stream the route's answer (`opened`: one already at hand, a cached answer), keeping it in the
        response cache when `lookup` writes and it completes."""
        executor = live.executor
        assert executor is not None
        # The executor raises before anything is sent.
        outcome = opened if opened is not None else await executor.open_stream(route, req, trace)
        assert outcome.stream is not None
        # Chunks carry no whole-answer logprobs: a stream that asked for them is not kept (a hit would lack them).
        keep = lookup is not None and lookup.write and not req.body.get("logprobs")
        collect = Assembled() if keep else None
        trace.final_model = outcome.model
        render = dialect.streamer(req, trace)
        # The streamed call's cost is known only at the end: the dialect's tail may carry it.
        resp = web.StreamResponse(headers={**self._headers(trace, route, outcome, cost="pending"),
                                           "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        error: UpstreamError | None = None
        first = True
        try:
            head = render.head()
            if head:
                await resp.write(head)
            async for chunk in outcome.stream:
                if collect is not None:
                    collect.add(chunk)
                data = render.chunk(chunk)
                if data:
                    await resp.write(data)
                if first:
                    first = False
                    self.counters.first_token(outcome.model, time.perf_counter() - t0)
        except UpstreamError as e:
            error = e
            trace.status, trace.error = e.status, e.message
            await resp.write(render.error(e))
        except CLIENT_GONE:
            trace.status, trace.error = 499, CLIENT_CLOSED
        finally:
            await outcome.stream.aclose()
            executor.finish_stream(outcome, trace, error)
            trace.latency_ms = (time.perf_counter() - t0) * 1000
            if live.config.store.record_content:
                trace.response = outcome.stream.text
        if trace.status != 499:
            try:
                await resp.write(render.tail(trace, outcome.model, outcome.stream.usage))
                await resp.write_eof()
            except CLIENT_GONE:  # the answer was complete, only its trailer was lost
                trace.status, trace.error = 499, CLIENT_CLOSED
        if trace.status == 200 and collect is not None and error is None:
            self.cache.keep(lookup, outcome.model, collect.completion(outcome.stream.usage))
        if trace.status == 200 and dialect.shadow and self.shadower is not None and trace.cache != "hit":
            self.shadower.offer(req, trace, outcome.stream.text, None)
        return resp

    def _access(self, request: web.Request, trace: Trace) -> None:
        """One access line: what a log search needs to find the request (never its content)."""
        access_log.info("%s %s %d %.1f ms %s -> %s", request.method, request.path, trace.status, trace.latency_ms,
                        trace.router or "-", trace.final_model or "-",
                        extra={"method": request.method, "path": request.path, "status": trace.status,
                               "latency_ms": round(trace.latency_ms, 3), "router": trace.router,
                               "model": trace.final_model, "client": trace.client, "endpoint": trace.endpoint,
                               "cost_usd": trace.cost_usd})

    def _remember(self, trace_id: str, client: str | None, keep: int = 50_000) -> None:
        self.recent[trace_id] = client
        if len(self.recent) > keep:
            self.recent.popitem(last=False)

    async def feedback(self, request: web.Request) -> web.Response:
        """POST /v1/feedback {trace_id, score | thumbs | rating (+ scale), source?, comment?}."""
        try:
            principal = await self.authenticate(request)
        except Unauthorized as e:
            return self._unauthenticated(e)
        client = principal.name if principal is not None else None
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
            if principal is not None and client != owner and not principal.admin:
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

    async def key_info(self, request: web.Request) -> web.Response:
        """GET /v1/key: the calling key's own figures and its team's, this UTC month (a team sees its numbers
        without an admin key): limits, requests, spend, savings and quality retained on shadow pairs."""
        try:
            principal = await self.authenticate(request)
        except Unauthorized as e:
            return self._unauthenticated(e)
        if principal is None:
            err = NotFound("the gateway serves without keys (server.open): there is no key to describe")
            return web.Response(status=err.status, body=dumps(err.to_json()), content_type="application/json")
        config, (_, month) = self.config, day_and_month_start(self.clock())

        def figures(by: str, name: str) -> dict[str, Any] | None:
            rows = self.store.traces(since=month, client=name) if by == "key" else self.store.traces(since=month, team=name)
            groups = summarise_by(rows, config, by)
            return groups[0] if groups else None

        def allowance(a: Any) -> dict[str, Any]:
            return {"rpm": a.rpm, "tpm": a.tpm, "usd_day": a.usd_day, "usd_month": a.usd_month}

        key = await asyncio.to_thread(figures, "key", principal.name)
        team = await asyncio.to_thread(figures, "team", principal.team) if principal.team else None
        body = {"object": "key", "name": principal.name, "team": principal.team, "since": month,
                "expires": principal.expires, "limits": allowance(principal.allowance),
                "team_limits": allowance(principal.team_allowance) if principal.team else None,
                "month": {"key": key, "team": team}}
        return web.Response(body=dumps(body), content_type="application/json")

    async def models(self, request: web.Request) -> web.Response:
        """GET /v1/models: the routers and models a request may name."""
        try:
            await self.authenticate(request)
        except Unauthorized as e:
            return self._unauthenticated(e)
        data = list(self._model_entries().values())
        return web.Response(body=dumps({"object": "list", "data": data}), content_type="application/json")

    async def model(self, request: web.Request) -> web.Response:
        """GET /v1/models/{id}: one router or model (ids may hold slashes: `gearshift/auto`)."""
        try:
            await self.authenticate(request)
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
        if self.live.metrics_key is None:
            return True
        return hmac.compare_digest(CHAT.token(request.headers), self.live.metrics_key)

    async def livez(self, request: web.Request) -> web.Response:
        """Liveness only: open to any prober, whatever the metrics key."""
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Whether this process should get new traffic, and each check's state in words."""
        checks = {"config": "loaded" if self.executor is not None else "starting"}
        if self.draining:
            checks["server"] = "shutting down"
        pending, limit = self.writer.pending(), self.config.server.ready_max_pending_traces
        down = self.writer.outage_seconds()
        store = "ok" if down is None else f"down for {down:.0f} s"
        if pending >= limit:
            checks["store"] = f"{store}; {pending} traces waiting, past server.ready_max_pending_traces ({limit})"
        else:
            checks["store"] = store if down is None else f"{store}; holding {pending} traces (limit {limit})"
        ok = self.executor is not None and not self.draining and pending < limit
        return ok, checks

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness for load balancers and probes: 200 while this process can serve and keep traces, else 503."""
        ok, checks = self.readiness()
        return web.Response(status=200 if ok else 503, content_type="application/json",
                            body=dumps({"status": "ready" if ok else "not_ready", "checks": checks}))

    async def health(self, request: web.Request) -> web.Response:
        """Liveness for anyone; the details (routers, traces, shadow spend) for the metrics key's holders.

        The counts are every worker's (`serve --workers N`), as in /metrics; the states are this process's."""
        if not self._may_see_details(request):
            return await self.livez(request)
        sh = self.shadower
        c = await self.combined()
        circuits = self.executor.breakers.snapshot() if self.executor is not None else {}
        states = self.versions.states() if self.versions is not None else {}
        routers = {name: {"kind": r.kind, **states.get(name, {})} for name, r in self.routers.items()}
        t = c.totals
        body = {"status": "ok", "routers": routers, "models": circuits,
                "requests": sum(c.counters.requests.values()), "requests_in_flight": c.counters.in_flight,
                "traces_pending": c.gauges["traces_pending"], "traces_written": t["traces_written"],
                "traces_updated": t["traces_updated"],
                "traces_failed": t["traces_failed"], "traces_dropped": t["traces_dropped"],
                "shadow": {"queued": c.gauges["shadow_queued"], "done": t["shadow_done"],
                           "dropped": dict(c.counters.shadow_dropped),
                           "spent_today_usd": sh.spent_today(),
                           "spent_today_usd_by_router": {r: sh.spent_today(r) for r in sh.policies}} if sh else None,
                "config": {"source": self.plan.source, "loaded_at": self.loaded_at, "reloads": self.reloads["ok"],
                           "failed_reloads": self.reloads["failed"]},
                "workers": c.workers, "uptime_s": round(time.time() - self.started, 1), "pid": os.getpid()}
        return web.Response(body=dumps(body), content_type="application/json")

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text: request counters, shadow counters and the watch's last report, of every worker."""
        if not self._may_see_details(request):
            return self._unauthenticated(Unauthorized("/metrics requires the metrics key: send "
                                                      "`Authorization: Bearer <key>`"))
        c = await self.combined()
        gauges = {name: (help_text, c.gauges[key]) for key, (name, help_text) in GAUGES.items()}
        totals = {name: (help_text, c.totals[key]) for key, (name, help_text) in TOTALS.items()}
        # Every worker runs the watch check on the shared store: this process's last report stands for all.
        report = self.watch.report if self.watch is not None else None
        circuits = c.circuits if self.executor is not None else None
        states = self.versions.states() if self.versions is not None else None
        return web.Response(body=render_metrics(c.counters, report, gauges, totals, circuits, states).encode(),
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
ALLOWED_METHODS = {"/v1/models": "GET, HEAD", "/v1/key": "GET, HEAD", "/v1/feedback": "POST", "/health": "GET, HEAD", "/metrics": "GET, HEAD",
                   "/livez": "GET, HEAD", "/health/live": "GET, HEAD", "/health/ready": "GET, HEAD", **admin.PATHS,
                   **{path: "POST" for kind in DIALECTS for path in DIALECTS[kind].paths + DIALECTS[kind].count_paths}}


async def _limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """A limited key's x-ratelimit-* headers on every answer it gets, streamed, whole or refused."""
    admission = request.get(LIMITS)
    if admission is not None:
        response.headers.update(admission.headers)


def create_app(config: Config | Plan, store: TraceStore | None = None,
               workers_dir: str | Path | None = None) -> web.Application:
    """The aiohttp application of a gateway (its lifecycle starts and stops the gateway). `workers_dir`:
    the directory the worker processes of one `serve --workers N` share their counts through."""
    gw = Gateway(config, store, workers_dir)
    app = web.Application(client_max_size=gw.config.server.max_body_bytes)
    app[GATEWAY_KEY] = gw
    app.on_startup.append(gw.start)
    app.on_response_prepare.append(_limit_headers)
    app.on_shutdown.append(gw.draining_starts)
    app.on_cleanup.append(gw.stop)
    for kind in DIALECTS:  # every API through the one pipeline (gateway/dialects: one module each)
        dialect = DIALECTS[kind]()
        for path in dialect.paths:
            app.router.add_post(path, gw.chat if dialect.kind == CHAT.kind else gw.handler(dialect))
        for path in dialect.count_paths:
            app.router.add_post(path, gw.counter(dialect))
    app.router.add_get("/v1/key", gw.key_info)
    app.router.add_get("/v1/models", gw.models)
    app.router.add_get("/v1/models/{id:.+}", gw.model)
    app.router.add_post("/v1/feedback", gw.feedback)
    app.router.add_get("/health", gw.health)
    app.router.add_get("/metrics", gw.metrics)
    app.router.add_get("/livez", gw.livez)
    app.router.add_get("/health/live", gw.livez)
    app.router.add_get("/health/ready", gw.ready)
    admin.add_routes(app, gw)
    app.router.add_route("*", "/{tail:.*}", gw.not_found)
    return app
