"""OpenTelemetry traces of the gateway's requests: off unless an OTLP endpoint is configured.

Configured only by the standard `OTEL_*` variables (endpoint, protocol, headers, service name,
sampler, batch delays). When off, nothing here is imported beyond this module and the request path
checks one name (`tracer is None`). When on, each request has one live span, current while it runs
(so upstream calls carry its `traceparent`); its children (the routing decision, each upstream call,
each gate) are made when it ends, from the Trace record's own times, so the path stays cheap. Shadow
work has a live span of its own, a child of the request's.

Spans carry no secrets (no keys, no headers) and no prompt or answer text.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from gearshift.errors import ConfigError
from gearshift.trace import SHADOW_ROLES, Call, Trace

log = logging.getLogger("gearshift.telemetry")

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
PROTOCOLS = ("http/protobuf", "grpc")
EXPORTERS = {"http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
             "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"}
INSTALL = "pip install 'gearshift[otel]'"
GRPC_INSTALL = f"{INSTALL} opentelemetry-exporter-otlp-proto-grpc"
SCOPE = "gearshift"
# Calls whose answer could go to the client: their spans are children of the request's.
ANSWER_ROLES = ("primary", "escalation", "fallback")

tracer: Any = None  # the SDK tracer while tracing is on; None when off (the only thing the request path reads)
_provider: Any = None
_propagator: Any = None
# Spans whose times are already known (made at a request's end) skip the tracer: built whole, handed to
# the batch processor. The SDK's start_span (sampling, attribute checks, locks) was most of tracing's CPU.
_processor: Any = None
_resource: Any = None
_scope: Any = None
_ids: Any = None
_users = 0  # gateways in this process that started tracing (tests run several): the last one to stop flushes


def _on(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def wanted(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, and neither the SDK nor the exporter off."""
    if _on(env, "OTEL_SDK_DISABLED").lower() == "true":
        return False
    if _on(env, "OTEL_TRACES_EXPORTER").lower() == "none":
        return False
    return any(_on(env, v) for v in ENDPOINT_VARS)


def endpoint(env: Mapping[str, str] = os.environ) -> str:
    """Where spans go, as the exporter reads it: the traces endpoint, else the base one (+ /v1/traces over HTTP)."""
    traces = _on(env, ENDPOINT_VARS[0])
    if traces:
        return traces
    base = _on(env, ENDPOINT_VARS[1])
    return base if protocol(env) == "grpc" else base.rstrip("/") + "/v1/traces"


def protocol(env: Mapping[str, str] = os.environ) -> str:
    """The OTLP protocol asked for (http/protobuf unless a PROTOCOL variable says grpc)."""
    for name in PROTOCOL_VARS:
        value = _on(env, name)
        if value:
            if value not in PROTOCOLS:
                raise ConfigError(f"{name}={value}: gearshift exports traces over {' or '.join(PROTOCOLS)}; "
                                  f"fix: set {name} to one of them")
            return value
    return PROTOCOLS[0]


def check(env: Mapping[str, str] = os.environ) -> str | None:
    """None when traces are not asked for; else where they go. Raises ConfigError (one line, with the
    fix) when they are asked for but cannot be sent: fail closed, as a bad config does."""
    if not wanted(env):
        return None
    proto = protocol(env)
    where = next(v for v in ENDPOINT_VARS if _on(env, v))
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise ConfigError(f"{where} is set but the OpenTelemetry SDK is not installed; fix: {INSTALL} "
                          f"(or unset {where})") from None
    try:
        importlib.import_module(EXPORTERS[proto])
    except ImportError:
        fix = GRPC_INSTALL if proto == "grpc" else INSTALL
        var = next((v for v in PROTOCOL_VARS if _on(env, v)), PROTOCOL_VARS[1])
        raise ConfigError(f"{var}={proto}: the OTLP {proto} exporter is not installed; fix: {fix}") from None
    return f"OTLP {proto} to {endpoint(env)}"


def start() -> bool:
    """Start exporting spans if the environment asks for it (see `check`); True when tracing is on."""
    global tracer, _provider, _propagator, _processor, _resource, _scope, _ids, _users
    where = check()
    if where is None:
        return False
    _users += 1
    if tracer is not None:
        return True
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    exporter = importlib.import_module(EXPORTERS[protocol()]).OTLPSpanExporter()
    named = _on(os.environ, "OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    resource = Resource.create({} if named else {"service.name": "gearshift"})
    # Our own provider, not the global one: the API lets a process set that once, and a test process
    # starts and stops several gateways. The exporter, sampler and batch settings read their OTEL_* variables.
    provider = TracerProvider(resource=resource)
    _processor = BatchSpanProcessor(exporter)
    provider.add_span_processor(_processor)
    _provider, _propagator, _resource = provider, TraceContextTextMapPropagator(), resource
    _scope, _ids = InstrumentationScope(SCOPE), RandomIdGenerator()
    tracer = provider.get_tracer(SCOPE)
    log.info("OpenTelemetry tracing on: spans of service %s go over %s",
             resource.attributes.get("service.name"), where)
    return True


def stop() -> None:
    """One gateway stopped; when it was the last, flush the spans waiting and stop exporting."""
    global tracer, _provider, _processor, _users
    if _users == 0:
        return
    _users -= 1
    if _users or _provider is None:
        return
    provider, _provider, _processor, tracer = _provider, None, None, None
    provider.shutdown()  # flushes the batch processor


def flush(timeout_ms: int = 5000) -> bool:
    """Export every finished span now (tests, benchmarks); True when done in time or tracing is off."""
    return bool(_provider.force_flush(timeout_ms)) if _provider is not None else True


def model_attributes(provider: str, upstream_id: str, base_url: str | None) -> dict[str, Any]:
    """The GenAI attributes of calls to one model: its API's provider, the upstream's model id and host."""
    attrs: dict[str, Any] = {"gen_ai.provider.name": provider, "gen_ai.request.model": upstream_id}
    if base_url:
        parts = urlsplit(base_url)  # host and port only: never a path's or query's tokens
        if parts.hostname:
            attrs["server.address"] = parts.hostname
            port = parts.port or (443 if parts.scheme == "https" else 80)
            attrs["server.port"] = port
    return attrs


_table: tuple[Any, dict[str, dict[str, Any]]] | None = None  # the last config's models and their attributes


def model_table(models: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every configured model's attributes (config.ModelConfig objects by name), kept until the config changes."""
    global _table
    if _table is None or _table[0] is not models:
        _table = (models, {name: model_attributes(m.provider, m.upstream_id, m.base_url) for name, m in models.items()})
    return _table[1]


class Span:
    """A live span (a request's or a shadow's), current in its task until closed."""

    __slots__ = ("span", "token", "marks")

    def __init__(self, span: Any, token: object) -> None:
        self.span = span
        self.token = token
        self.marks: list[int] = []  # epoch ns: routing started, routing done

    def mark(self) -> None:
        self.marks.append(time.time_ns())


def open_request(headers: Mapping[str, str], method: str, path: str, endpoint: str) -> Span | None:
    """Start a request's span as the current context, parented on the incoming W3C `traceparent`."""
    if tracer is None:
        return None
    from opentelemetry import context
    from opentelemetry.trace import SpanKind, set_span_in_context

    parent = _propagator.extract(headers)
    span = tracer.start_span(f"{method} {path}", context=parent, kind=SpanKind.SERVER,
                             attributes={"http.request.method": method, "url.path": path,
                                         "gearshift.endpoint": endpoint})
    return Span(span, context.attach(set_span_in_context(span, parent)))


def inject(headers: dict[str, str]) -> dict[str, str]:
    """`headers` with the current span's `traceparent` (a copy: the caller's may be shared)."""
    if tracer is None:
        return headers
    out = dict(headers)
    _propagator.inject(out)
    return out


def parent() -> Any:
    """The current span's context (a request's, for shadow work to hang under); None when off."""
    if tracer is None:
        return None
    from opentelemetry import context

    return context.get_current()


def close_request(s: Span, trace: Trace, models: Mapping[str, Any]) -> None:
    """End a request's span, after adding its children from the trace: routing, calls and gates."""
    from opentelemetry import context

    context.detach(s.token)  # type: ignore[arg-type]
    try:
        _request_spans(s, trace, models)
    except Exception:  # tracing must never fail a request: the span is lost, the answer is not
        log.exception("OpenTelemetry: the spans of trace %s were not made", trace.id)
    s.span.end()


def _request_spans(s: Span, trace: Trace, models: Mapping[str, Any]) -> None:
    from opentelemetry.trace import Status, StatusCode

    span = s.span
    attrs: dict[str, Any] = {"gearshift.trace_id": trace.id, "http.response.status_code": trace.status,
                             "gearshift.streamed": trace.streamed, "gearshift.cost_usd": trace.cost_usd}
    if trace.router:
        attrs["gearshift.router"] = trace.router
    if trace.final_model:
        attrs["gearshift.model"] = trace.final_model
    if trace.client:
        attrs["gearshift.client"] = trace.client  # the key's name, never the key
    if trace.shadowed:
        attrs["gearshift.shadowed"] = True
    span.set_attributes(attrs)
    if trace.status >= 500:
        span.set_status(Status(StatusCode.ERROR, (trace.error or "")[:200]))
        span.set_attribute("error.type", str(trace.status))
    parent = span.get_span_context()
    if tracer is not None and span.is_recording():  # a request sampled out has no children either
        if trace.router and len(s.marks) >= 2:
            route: dict[str, Any] = {"gearshift.router": trace.router, "gearshift.route.reason": trace.reason,
                     "gearshift.route.models": list(trace.route)}
            if trace.score is not None:
                route["gearshift.route.score"] = trace.score
            if trace.threshold is not None:
                route["gearshift.route.threshold"] = trace.threshold
            if trace.arm:
                route["gearshift.route.arm"] = trace.arm
            _child(parent, f"route {trace.router}", s.marks[0], s.marks[1], route)
        serving = [c for c in trace.calls if c.role not in SHADOW_ROLES]
        _calls(parent, serving, trace.verdicts, trace.endpoint, model_table(models))


def open_shadow(under: Any, trace: Trace, reference: str | None) -> Span | None:
    """Start a shadow's span, a child of the request's (`under`, from `parent()`), as the current context."""
    if tracer is None or under is None:
        return None
    from opentelemetry import context
    from opentelemetry.trace import set_span_in_context

    attrs = {"gearshift.trace_id": trace.id, "gearshift.router": trace.router}
    if reference:
        attrs["gearshift.shadow.reference"] = reference
    span = tracer.start_span(f"shadow {reference or trace.router}", context=under, attributes=attrs)
    return Span(span, context.attach(set_span_in_context(span)))


def close_shadow(s: Span, before: Trace, after: Trace | None, models: Mapping[str, Any]) -> None:
    """End a shadow's span, with its calls (reference, judge) and the pair's verdict."""
    from opentelemetry import context

    context.detach(s.token)  # type: ignore[arg-type]
    try:
        _shadow_spans(s.span, before, after, models)
    except Exception:
        log.exception("OpenTelemetry: the shadow spans of trace %s were not made", before.id)
    s.span.end()


def _shadow_spans(span: Any, before: Trace, after: Trace | None, models: Mapping[str, Any]) -> None:
    if after is None:
        span.set_attribute("gearshift.shadow.dropped", True)
    else:
        calls = after.calls[len(before.calls):]
        span.set_attribute("gearshift.cost_usd", sum(c.cost_usd for c in calls))
        for v in after.verdicts[len(before.verdicts):]:
            if v.get("gate") == "shadow_agreement":
                span.set_attributes({"gearshift.shadow.passed": bool(v.get("passed")),
                                     "gearshift.shadow.method": str(v.get("method") or "")})
                if isinstance(v.get("score"), int | float):
                    span.set_attribute("gearshift.shadow.score", float(v["score"]))
        if tracer is not None and span.is_recording():
            _calls(span.get_span_context(), calls, (), after.endpoint, model_table(models))


def _child(parent: Any, name: str, start: int, end: int, attributes: dict[str, Any], client: bool = False,
           error: str | None = None) -> Any:
    """Export a finished child span of `parent` (a SpanContext) as it is; its own SpanContext."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

    ctx = SpanContext(parent.trace_id, _ids.generate_span_id(), is_remote=False, trace_flags=parent.trace_flags,
                      trace_state=parent.trace_state)
    status = Status(StatusCode.UNSET) if error is None else Status(StatusCode.ERROR, error[:200])
    _processor.on_end(ReadableSpan(name, ctx, parent, _resource, attributes, kind=SpanKind.CLIENT if client
                                   else SpanKind.INTERNAL, status=status, start_time=start, end_time=end,
                                   instrumentation_scope=_scope))
    return ctx


def _calls(ctx: Any, calls: list[Call], verdicts: Iterable[Mapping[str, Any]], endpoint: str,
           models: Mapping[str, Mapping[str, Any]]) -> None:
    """Spans of a request's (or a shadow's) calls and gates, from their recorded start and length."""
    gates = []
    for v in verdicts:
        started, ms = v.get("started"), v.get("latency_ms")
        if v.get("gate", "").startswith("shadow_") or not isinstance(started, float) or not isinstance(ms, float):
            continue
        start = int(started * 1e9)
        end = start + int(ms * 1e6)
        attrs = {"gearshift.gate.name": v["gate"], "gearshift.gate.passed": bool(v.get("passed")),
                 "gearshift.gate.score": float(v.get("score") or 0.0),
                 "gearshift.gate.cost_usd": float(v.get("cost_usd") or 0.0)}
        if v.get("model"):
            attrs["gearshift.gate.model"] = v["model"]
        gates.append((start, end, _child(ctx, f"gate {v['gate']}", start, end, attrs)))
    operation = "embeddings" if endpoint == "embeddings" else "chat"
    for c in calls:
        if c.role == "gate" or not c.started:  # a gate without calls of its own: its verdict's span says it
            continue
        start = int(c.started * 1e9)
        # A judge's call hangs under the gate that made it (the one running when it started).
        under = next((g for s0, e0, g in gates if s0 <= start <= e0), ctx) if c.role not in ANSWER_ROLES else ctx
        _call_span(under, c, operation, start, models)


def _call_span(ctx: Any, c: Call, operation: str, start: int, models: Mapping[str, Mapping[str, Any]]) -> None:
    model = models.get(c.model, {})
    attrs: dict[str, Any] = {"gen_ai.operation.name": operation, **model,
                             "gen_ai.usage.input_tokens": c.input_tokens, "gen_ai.usage.output_tokens": c.output_tokens,
                             "gearshift.model": c.model, "gearshift.call.role": c.role,
                             "gearshift.call.attempt": c.attempt, "gearshift.cost_usd": c.cost_usd}
    if c.usage_estimated:
        attrs["gearshift.usage_estimated"] = True
    failed = bool(c.error) or c.status != 200
    if failed:
        attrs["error.type"] = str(c.status)
    _child(ctx, f"{operation} {model.get('gen_ai.request.model', c.model)}", start, start + int(c.latency_ms * 1e6),
           attrs, client=True, error=(c.error or "") if failed else None)
