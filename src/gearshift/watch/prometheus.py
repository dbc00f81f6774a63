"""Request counters and the Prometheus text exposition (format 0.0.4) of them and the last watch report.

The gateway calls `Counters.observe(trace)` once per finished request and serves
`render_metrics(counters, report)` at GET /metrics with `CONTENT_TYPE`. Counters are plain dicts
behind a lock: the event loop updates them, and a scrape may come at any time.

Several worker processes (`serve --workers N`) are one gateway to Prometheus: each worker publishes
`Counters.state()` to a file every second (watch/peers.py), and whichever worker answers a scrape
serves `Counters.merged` of its live counters and the others' latest states. This is hand-written
rather than prometheus_client's multiprocess mode, weighed on three counts:
- the request path: here a request costs a few dict updates under one lock; in multiprocess mode
  every increment and every histogram observation is a locked write into an mmap'd file. The same
  updates (benchmarks/metrics_observe.py, a loaded 2-core machine): 9 us per request here,
  100 us there, against a per-request CPU budget of well under a millisecond;
- what it can aggregate: multiprocess mode drops custom collectors and needs a mode per gauge, and
  our circuit, router-state and watch gauges come from objects, not from a registry;
- dead workers: it needs `mark_process_dead` hooks and an environment variable set before import;
  here a dead worker's last file simply stays, so totals never go down.
Counters sum across workers, histograms bucket-wise, gauges (in flight) over live workers only.
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
# Duration buckets, seconds, for requests, upstream calls and the first token: from a cache-fast
# answer to a long escalated generation.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

Labels = tuple[str, ...]
Histograms = dict[Labels, list[float]]  # labels -> per-bucket counts (+Inf last), then the sum

# What `state()` holds: labelled counters (keyed by label tuples, or by the one label's value),
# histograms, scalar counters; `in_flight` is the one gauge.
TABLES = ("requests", "calls", "cost", "tokens", "cache", "limited", "team_requests", "team_spend")
# Teams as label values, bounded: the first TEAM_LABELS team names in name order are shown, the rest are
# summed under `other` (and requests without a team under `none`); one process tracks at most
# TEAM_TRACKED names, later ones go to `other` at once, so a flood of team names cannot grow memory.
TEAM_LABELS = 50
TEAM_TRACKED = 1000
NO_TEAM, OTHER_TEAMS = "none", "other"
ONE_LABEL = ("shadow_dropped", "shadow_verdicts", "watch_alerts")
HISTOGRAMS = ("latency", "upstream", "ttft")
SCALARS = ("shadow", "watch_checks")


class Counters:
    """Monotonic request, call, token, cost, latency and shadow counters of one gateway process."""

    def __init__(self, buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self._lock = threading.Lock()
        self.requests: dict[Labels, float] = {}  # (router, model, status, endpoint)
        self.calls: dict[Labels, float] = {}  # (model, role, status)
        self.cost: dict[Labels, float] = {}  # (model, role)
        self.tokens: dict[Labels, float] = {}  # (model, router, direction: input | output)
        self.cache: dict[Labels, float] = {}  # (router, result): requests to routers with a response cache
        self.limited: dict[Labels, float] = {}  # (scope: key | team, reason: rpm | tpm | usd_day | usd_month)
        self.team_requests: dict[Labels, float] = {}  # (team,)
        self.team_spend: dict[Labels, float] = {}  # (team,): serving spend (shadow work is the router's)
        self.latency: Histograms = {}  # (router,): the whole request
        self.upstream: Histograms = {}  # (model, role): each upstream call (gate runs are not)
        self.ttft: Histograms = {}  # (model,): request start to the first streamed chunk
        self.in_flight = 0  # requests started, not finished (the event loop adds and takes)
        self.shadow = 0
        self.shadow_dropped: dict[str, float] = {}  # reason
        self.shadow_verdicts: dict[str, float] = {}  # agree / disagree
        self.watch_checks = 0
        self.watch_alerts: dict[str, float] = {}  # metric
        self.report: WatchReport | None = None

    def observe(self, trace: Trace) -> None:
        """Count one finished request: call it once per trace."""
        # Per request on the event loop: keys are built outside the lock, histograms updated inline.
        router = trace.router or "none"
        # The endpoint is bounded: a trace's is one of trace.ENDPOINTS, anything else counts as "other".
        endpoint = trace.endpoint if trace.endpoint in ENDPOINTS else "other"
        key = (router, trace.final_model or "none", _STATUS.get(trace.status) or _status(trace.status), endpoint)
        seconds = trace.latency_ms / 1000
        team = (trace.team or NO_TEAM,)
        spend = trace.cost_usd
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + 1
            if trace.cache is not None:  # bounded: configured routers, trace.CACHE_RESULTS
                ck = (router, trace.cache)
                self.cache[ck] = self.cache.get(ck, 0) + 1
            if team not in self.team_requests and len(self.team_requests) >= TEAM_TRACKED and trace.team:
                team = (OTHER_TEAMS,)
            self.team_requests[team] = self.team_requests.get(team, 0) + 1
            self.team_spend[team] = self.team_spend.get(team, 0.0) + spend
            shadowed = self._calls(trace.calls, router)
            h = self.latency.get((router,))
            if h is None:
                h = self.latency[(router,)] = [0.0] * (len(self.buckets) + 2)
            h[bisect_left(self.buckets, seconds)] += 1  # the first bucket with seconds <= le, else +Inf
            h[-1] += seconds
            if shadowed:
                self.shadow += 1
                self._verdicts(trace.verdicts)

    def limit(self, scope: str, reason: str) -> None:
        """Count a request refused by a key's or team's rate limit or budget (bounded labels: no names)."""
        with self._lock:
            self.limited[(scope, reason)] = self.limited.get((scope, reason), 0) + 1

    def first_token(self, model: str, seconds: float) -> None:
        """Count a stream's time to its first chunk (from the request's start), by the model streaming."""
        with self._lock:
            self._time(self.ttft, (model,), seconds)

    def observe_shadow(self, calls: Iterable[Call], verdicts: Iterable[Mapping[str, Any]] = (),
                       router: str = "none") -> None:
        """Count one shadow run that finished after `observe` saw its request: only the calls and
        verdicts the shadow added (its reference call, its judge call, its verdicts)."""
        with self._lock:
            self.shadow += 1
            self._calls(calls, router or "none")
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

    def _calls(self, calls: Iterable[Call], router: str) -> bool:
        """Count calls, their cost, tokens and upstream time; whether one of them was a shadow call."""
        shadowed = False
        counts, cost, tokens, upstream, buckets = self.calls, self.cost, self.tokens, self.upstream, self.buckets
        for c in calls:
            model, role = c.model, c.role
            k = (model, role, _STATUS.get(c.status) or _status(c.status))
            counts[k] = counts.get(k, 0) + 1
            mk = (model, role)
            cost[mk] = cost.get(mk, 0.0) + c.cost_usd
            if role == "gate":
                continue  # a gate run in-process: its "model" is the gate's name, it used no tokens
            if role == "shadow":
                shadowed = True
            h = upstream.get(mk)
            if h is None:
                h = upstream[mk] = [0.0] * (len(buckets) + 2)
            seconds = c.latency_ms / 1000
            h[bisect_left(buckets, seconds)] += 1
            h[-1] += seconds
            if c.input_tokens:
                tk = (model, router, "input")
                tokens[tk] = tokens.get(tk, 0) + c.input_tokens
            if c.output_tokens:
                tk = (model, router, "output")
                tokens[tk] = tokens.get(tk, 0) + c.output_tokens
        return shadowed

    def _time(self, table: Histograms, key: Labels, seconds: float) -> None:
        h = table.get(key)
        if h is None:
            h = table[key] = [0.0] * (len(self.buckets) + 2)
        h[bisect_left(self.buckets, seconds)] += 1  # the first bucket with seconds <= le, else +Inf
        h[-1] += seconds

    def _verdicts(self, verdicts: Iterable[Mapping[str, Any]]) -> None:
        for v in verdicts:
            if v.get("gate") == SHADOW_GATE:
                result = "agree" if v.get("passed") else "disagree"
                self.shadow_verdicts[result] = self.shadow_verdicts.get(result, 0) + 1

    # -- across worker processes -------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Every count as JSON-ready lists, for another process to add (`merged`)."""
        with self._lock:
            out: dict[str, Any] = {name: [[*k, v] for k, v in getattr(self, name).items()] for name in TABLES}
            out.update({name: [[k, v] for k, v in getattr(self, name).items()] for name in ONE_LABEL})
            out.update({name: [[*k, *h] for k, h in getattr(self, name).items()] for name in HISTOGRAMS})
            out.update({name: getattr(self, name) for name in SCALARS})
            out["buckets"], out["in_flight"] = list(self.buckets), self.in_flight
        return out

    @classmethod
    def merged(cls, states: Iterable[Mapping[str, Any]], live: Iterable[Mapping[str, Any]] = ()) -> Counters:
        """Counters summing `states` (counters, histograms bucket-wise) and, of the gauges, only those
        of `live` (states of processes still running; also in `states` or not)."""
        total = cls()
        n = len(total.buckets) + 2
        for s in states:
            if tuple(s.get("buckets", total.buckets)) != total.buckets:
                continue  # another build's buckets (an old file): they cannot be added
            for name in TABLES:
                table = getattr(total, name)
                for *k, v in s.get(name, ()):
                    table[tuple(k)] = table.get(tuple(k), 0) + v
            for name in ONE_LABEL:
                single = getattr(total, name)
                for k, v in s.get(name, ()):
                    single[k] = single.get(k, 0) + v
            for name in HISTOGRAMS:
                hists = getattr(total, name)
                for row in s.get(name, ()):
                    k, h = tuple(row[:-n]), row[-n:]
                    mine = hists.setdefault(k, [0.0] * n)
                    for i, v in enumerate(h):
                        mine[i] += v
            for name in SCALARS:
                setattr(total, name, getattr(total, name) + s.get(name, 0))
        total.in_flight = sum(int(s.get("in_flight", 0)) for s in live)
        return total


_STATUS: dict[int, str] = {}


def _status(code: int) -> str:
    """The status as a label value; a few distinct codes, so the strings are made once."""
    s = _STATUS.get(code)
    if s is None:
        s = _STATUS[code] = str(code)
    return s


def fold_teams(values: Mapping[Labels, float], keep: int = TEAM_LABELS) -> dict[Labels, float]:
    """Per-team values with at most `keep` team names (the first in name order) and `none`; the rest summed
    under `other`."""
    named = sorted(k for k in values if k[0] not in (NO_TEAM, OTHER_TEAMS))
    shown = set(named[:keep])
    out: dict[Labels, float] = {}
    for k, v in values.items():
        label = k if k in shown or k[0] == NO_TEAM else (OTHER_TEAMS,)
        out[label] = out.get(label, 0.0) + v
    return out


def _one_label(values: Mapping[str, float]) -> dict[Labels, float]:
    return {(k,): v for k, v in values.items()}


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

    def histogram(self, name: str, help_text: str, names: Labels, buckets: tuple[float, ...],
                  values: Histograms) -> None:
        """A histogram family from per-bucket counts (+Inf last, then the sum): cumulative buckets."""
        self.family(name, "histogram", help_text)
        for key, h in sorted(values.items()):
            labels = dict(zip(names, key, strict=True))
            cumulative = 0.0
            for le, count in zip((*buckets, math.inf), h[:-1], strict=True):
                cumulative += count
                self.sample(f"{name}_bucket", {**labels, "le": _num(le)}, cumulative)
            self.sample(f"{name}_sum", labels, h[-1])
            self.sample(f"{name}_count", labels, cumulative)


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
        w.labelled("gearshift_team_requests_total", "counter", f"Requests by the key's team (the first {TEAM_LABELS} "
                   "teams by name; the rest as `other`, no team as `none`).", ("team",),
                   fold_teams(counters.team_requests))
        w.labelled("gearshift_spend_usd_total", "counter", f"Serving spend in USD by the key's team (the first "
                   f"{TEAM_LABELS} teams by name; the rest as `other`, no team as `none`).", ("team",),
                   fold_teams(counters.team_spend))
        w.labelled("gearshift_tokens_total", "counter", "Tokens of upstream calls (as reported, else estimated) "
                   "by model, the router of the request, and direction (input, output).",
                   ("model", "router", "direction"), counters.tokens)
        w.labelled("gearshift_cache_requests_total", "counter", "Requests to routers with a response cache, by "
                   "router and result (hit, miss, bypass: the client's cache-control, skip: not cacheable).",
                   ("router", "result"), counters.cache)
        w.labelled("gearshift_limited_requests_total", "counter", "Requests refused (429) by a rate limit or a "
                   "budget, by scope (key, team) and reason (rpm, tpm, usd_day, usd_month).", ("scope", "reason"),
                   counters.limited)
        w.histogram("gearshift_request_duration_seconds", "Request latency, seconds, by router.",
                    ("router",), counters.buckets, counters.latency)
        w.histogram("gearshift_upstream_duration_seconds", "Upstream call latency, seconds, by model and role "
                    "(primary, escalation, fallback, judge, shadow...).", ("model", "role"), counters.buckets,
                    counters.upstream)
        w.histogram("gearshift_time_to_first_token_seconds", "Streamed requests: seconds from the request's "
                    "arrival to its first chunk sent, by the model streaming.", ("model",), counters.buckets,
                    counters.ttft)
        w.family("gearshift_requests_in_flight", "gauge", "Requests being answered now.")
        w.sample("gearshift_requests_in_flight", {}, counters.in_flight)
        w.family("gearshift_shadow_total", "counter", "Shadow requests run against the reference model.")
        w.sample("gearshift_shadow_total", {}, counters.shadow)
        w.labelled("gearshift_shadow_dropped_total", "counter", "Sampled shadow requests not run, by reason.",
                   ("reason",), _one_label(counters.shadow_dropped))
        w.labelled("gearshift_shadow_verdicts_total", "counter", "Shadow pairs by agreement with the reference.",
                   ("result",), _one_label(counters.shadow_verdicts))
        w.family("gearshift_watch_checks_total", "counter", "Watch checks run.")
        w.sample("gearshift_watch_checks_total", {}, counters.watch_checks)
        w.labelled("gearshift_watch_alerts_total", "counter", "Drift alerts raised, by metric.",
                   ("metric",), _one_label(counters.watch_alerts))
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


# Watched metrics whose value has a unit: the suffix in the report's name, the base unit's family
# suffix and the factor to it. The others (rates, shares, ratios, PSI) are unitless.
UNITS = {"_ms": ("_seconds", 0.001)}


def _unit(name: str) -> tuple[str, float] | None:
    """The family name and factor of a metric with a unit (latency_p95_ms -> latency_p95_seconds)."""
    for suffix, (base, factor) in UNITS.items():
        if name.endswith(suffix):
            return name[: -len(suffix)] + base, factor
    return None


def _report_gauges(w: _Writer, r: WatchReport) -> None:
    """One unit per family: unitless values under gearshift_watch_value/_baseline{metric}, each
    metric with a unit under its own family in base units (gearshift_watch_latency_p95_seconds)."""
    unitless = [m for m in r.metrics if _unit(m.name) is None]

    def gauge(name: str, help_text: str, pick: Any, metrics: Iterable[Any] = r.metrics) -> None:
        values: dict[Labels, float] = {(m.name,): v for m in metrics if (v := pick(m)) is not None}
        w.labelled(name, "gauge", help_text, ("metric",), values)

    gauge("gearshift_watch_value", "Watched unitless metric (rate, share, ratio, PSI) over the current window.",
          lambda m: m.value, unitless)
    gauge("gearshift_watch_baseline", "Watched unitless metric in the baseline.", lambda m: m.baseline, unitless)
    gauge("gearshift_watch_bound", "Configured drift bound of the metric (a change, ratio or floor: unitless).",
          lambda m: m.bound)
    gauge("gearshift_watch_drift", "1 when the metric is past its bound in the last check.",
          lambda m: 1.0 if m.status == DRIFT else 0.0)
    gauge("gearshift_watch_lower", "Lower end of the metric's interval (quality retained).", lambda m: m.lower)
    gauge("gearshift_watch_upper", "Upper end of the metric's interval (quality retained).", lambda m: m.upper)
    for m in r.metrics:
        unit = _unit(m.name)
        if unit is None:
            continue
        family, factor = unit
        for name, v, where in ((f"gearshift_watch_{family}", m.value, "over the current window"),
                               (f"gearshift_watch_baseline_{family}", m.baseline, "in the baseline")):
            w.family(name, "gauge", f"Watched {m.name.removesuffix('_ms')} {where}, in base units.")
            if v is not None:
                w.sample(name, {}, v * factor)
    w.labelled("gearshift_watch_window_spend_usd", "gauge", "USD over the last checked window: serving spend, the "
               "always-reference estimate for the same requests, and shadow spend.", ("kind",),
               {(k,): v for k, v in r.spend.items() if v is not None})
    for name, help_text, value in (
        ("gearshift_watch_window_requests", "Traces in the last checked window.", r.window_n),
        ("gearshift_watch_last_check_timestamp_seconds", "Unix time of the last check.", r.created),
    ):
        w.family(name, "gauge", help_text)
        w.sample(name, {}, value)
