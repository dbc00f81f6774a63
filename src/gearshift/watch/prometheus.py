"""Request counters and the Prometheus text exposition (format 0.0.4) of them and the last watch report.

The gateway calls `Counters.observe(trace)` once per finished request and serves
`render_metrics(counters, report)` at GET /metrics with `CONTENT_TYPE`. Counters are plain dicts
behind a lock: the event loop updates them, and a scrape may come at any time.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

from gearshift.trace import ENDPOINTS, Call, Trace
from gearshift.watch.findings import DRIFT, SHADOW_GATE, WatchReport

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Request duration buckets, seconds: from a cache-fast answer to a long escalated generation.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

Labels = tuple[str, ...]


class Counters:
    """Monotonic request, call, cost, latency and shadow counters of one gateway process."""

    def __init__(self, buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self._lock = threading.Lock()
        self.requests: dict[Labels, int] = {}  # (router, model, status, endpoint)
        self.calls: dict[Labels, int] = {}  # (model, role, status)
        self.cost: dict[Labels, float] = {}  # (model, role)
        self.latency: dict[str, list[float]] = {}  # router -> per-bucket counts (+Inf last), then sum
        self.shadow = 0
        self.shadow_dropped: dict[str, int] = {}  # reason
        self.shadow_verdicts: dict[str, int] = {}  # agree / disagree
        self.watch_checks = 0
        self.watch_alerts: dict[str, int] = {}  # metric
        self.report: WatchReport | None = None

    def observe(self, trace: Trace) -> None:
        """Count one finished request: call it once per trace."""
        router = trace.router or "none"
        with self._lock:
            # The endpoint is bounded: a trace's is one of trace.ENDPOINTS, anything else counts as "other".
            endpoint = trace.endpoint if trace.endpoint in ENDPOINTS else "other"
            key = (router, trace.final_model or "none", _status(trace.status), endpoint)
            self.requests[key] = self.requests.get(key, 0) + 1
            self._calls(trace.calls)
            h = self.latency.get(router)
            if h is None:
                h = self.latency[router] = [0.0] * (len(self.buckets) + 2)
            seconds = trace.latency_ms / 1000
            h[bisect_left(self.buckets, seconds)] += 1  # the first bucket with seconds <= le, else +Inf
            h[-1] += seconds
            if any(c.role == "shadow" for c in trace.calls):
                self.shadow += 1
                self._verdicts(trace.verdicts)

    def observe_shadow(self, calls: Iterable[Call], verdicts: Iterable[Mapping[str, Any]] = ()) -> None:
        """Count one shadow run that finished after `observe` saw its request: only the calls and
        verdicts the shadow added (its reference call, its judge call, its verdicts)."""
        with self._lock:
            self.shadow += 1
            self._calls(calls)
            self._verdicts(verdicts)

    def sync_shadow_dropped(self, dropped: Mapping[str, int]) -> None:
        """Take the drop counts the Shadower keeps in its own Counter."""
        with self._lock:
            self.shadow_dropped = {str(k): int(v) for k, v in dropped.items()}

    def record_report(self, report: WatchReport, fired: Iterable[str] = ()) -> None:
        """Keep the last watch report for the gauges; count the metrics that alerted."""
        with self._lock:
            self.report = report
            self.watch_checks += 1
            for name in fired:
                self.watch_alerts[name] = self.watch_alerts.get(name, 0) + 1

    def _calls(self, calls: Iterable[Call]) -> None:
        for c in calls:
            k = (c.model, c.role, _status(c.status))
            self.calls[k] = self.calls.get(k, 0) + 1
            ck = (c.model, c.role)
            self.cost[ck] = self.cost.get(ck, 0.0) + c.cost_usd

    def _verdicts(self, verdicts: Iterable[Mapping[str, Any]]) -> None:
        for v in verdicts:
            if v.get("gate") == SHADOW_GATE:
                result = "agree" if v.get("passed") else "disagree"
                self.shadow_verdicts[result] = self.shadow_verdicts.get(result, 0) + 1


_STATUS: dict[int, str] = {}


def _status(code: int) -> str:
    """The status as a label value; a few distinct codes, so the strings are made once."""
    s = _STATUS.get(code)
    if s is None:
        s = _STATUS[code] = str(code)
    return s


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(float(v))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: Mapping[str, str], value: float) -> None:
        body = ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{body}}} {_num(value)}" if body else f"{name} {_num(value)}")

    def labelled(self, name: str, kind: str, help_text: str, names: Labels, values: Mapping[Labels, float]) -> None:
        self.family(name, kind, help_text)
        for key, v in sorted(values.items()):
            self.sample(name, dict(zip(names, key, strict=True)), v)


ROUTER_STATES = ("observing", "no_signal", "proven", "serving")


def render_metrics(counters: Counters, report: WatchReport | None = None,
                   gauges: Mapping[str, tuple[str, float]] | None = None,
                   totals: Mapping[str, tuple[str, float]] | None = None,
                   circuits: Mapping[str, Mapping[str, Any]] | None = None,
                   routers: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The Prometheus text exposition of the counters, the report's gauges (default: the last report
    recorded in `counters`), extra gauges and counters (`totals`) given as {name: (help, value)}, and
    each model's circuit breaker (`circuits`: the executor's snapshot) and each scoring router's proof
    state (`routers`: the version loop's states)."""
    report = report if report is not None else counters.report
    w = _Writer()
    with counters._lock:
        w.labelled("gearshift_requests_total", "counter",
                   "Requests by router, final model, HTTP status and API endpoint (chat, responses, messages, "
                   "embeddings).", ("router", "model", "status", "endpoint"), counters.requests)
        w.labelled("gearshift_calls_total", "counter", "Upstream calls and gate runs by model, role and status.",
                   ("model", "role", "status"), counters.calls)
        w.labelled("gearshift_cost_usd_total", "counter", "Spend in USD from reported usage and configured prices.",
                   ("model", "role"), counters.cost)
        name = "gearshift_request_duration_seconds"
        w.family(name, "histogram", "Request latency, seconds, by router.")
        for router, h in sorted(counters.latency.items()):
            cumulative = 0.0
            for le, count in zip((*counters.buckets, math.inf), h[:-1], strict=True):
                cumulative += count
                w.sample(f"{name}_bucket", {"router": router, "le": _num(le)}, cumulative)
            w.sample(f"{name}_sum", {"router": router}, h[-1])
            w.sample(f"{name}_count", {"router": router}, cumulative)
        w.family("gearshift_shadow_total", "counter", "Shadow requests run against the reference model.")
        w.sample("gearshift_shadow_total", {}, counters.shadow)
        w.labelled("gearshift_shadow_dropped_total", "counter", "Sampled shadow requests not run, by reason.",
                   ("reason",), {(k,): v for k, v in counters.shadow_dropped.items()})
        w.labelled("gearshift_shadow_verdicts_total", "counter", "Shadow pairs by agreement with the reference.",
                   ("result",), {(k,): v for k, v in counters.shadow_verdicts.items()})
        w.family("gearshift_watch_checks_total", "counter", "Watch checks run.")
        w.sample("gearshift_watch_checks_total", {}, counters.watch_checks)
        w.labelled("gearshift_watch_alerts_total", "counter", "Drift alerts raised, by metric.",
                   ("metric",), {(k,): v for k, v in counters.watch_alerts.items()})
    if report is not None:
        _report_gauges(w, report)
    if circuits:
        w.labelled("gearshift_model_circuit_open", "gauge", "1 while the model's circuit breaker is open "
                   "(the model is skipped), else 0.", ("model",),
                   {(m, ): 1.0 if c["state"] == "open" else 0.0 for m, c in circuits.items()})
        w.labelled("gearshift_model_circuit_trips_total", "counter", "Times the model's circuit breaker opened.",
                   ("model",), {(m, ): c["trips"] for m, c in circuits.items()})
        w.labelled("gearshift_model_consecutive_failures", "gauge", "The model's failed calls since its last "
                   "success.", ("model",), {(m, ): c["consecutive_failures"] for m, c in circuits.items()})
    if routers:
        w.labelled("gearshift_router_state", "gauge", "1 for the scoring router's current state (observing, "
                   "no_signal, proven, serving), else 0.", ("router", "state"),
                   {(name, s): float(r["state"] == s) for name, r in routers.items() for s in ROUTER_STATES})
        w.labelled("gearshift_router_proof_pairs", "gauge", "Scored shadow pairs at the router's last proof check.",
                   ("router",), {(name,): float(r["pairs"]) for name, r in routers.items()})
    for kind, extra in (("gauge", gauges), ("counter", totals)):
        for name, (help_text, value) in sorted((extra or {}).items()):
            w.family(name, kind, help_text)
            w.sample(name, {}, value)
    return "\n".join(w.lines) + "\n"


def _report_gauges(w: _Writer, r: WatchReport) -> None:
    def gauge(name: str, help_text: str, pick: Any) -> None:
        values: dict[Labels, float] = {(m.name,): v for m in r.metrics if (v := pick(m)) is not None}
        w.labelled(name, "gauge", help_text, ("metric",), values)

    gauge("gearshift_watch_value", "Watched metric over the current window.", lambda m: m.value)
    gauge("gearshift_watch_baseline", "Watched metric in the baseline.", lambda m: m.baseline)
    gauge("gearshift_watch_bound", "Configured drift bound of the metric.", lambda m: m.bound)
    gauge("gearshift_watch_drift", "1 when the metric is past its bound in the last check.",
          lambda m: 1.0 if m.status == DRIFT else 0.0)
    gauge("gearshift_watch_lower", "Lower end of the metric's interval (quality retained).", lambda m: m.lower)
    gauge("gearshift_watch_upper", "Upper end of the metric's interval (quality retained).", lambda m: m.upper)
    for name, help_text, value in (
        ("gearshift_watch_window_requests", "Traces in the last checked window.", r.window_n),
        ("gearshift_watch_last_check_timestamp_seconds", "Unix time of the last check.", r.created),
    ):
        w.family(name, "gauge", help_text)
        w.sample(name, {}, value)
