"""Prometheus text exposition: counters, histograms, label escaping, report gauges (one unit per family),
across worker processes (merged states), served over HTTP, and the Grafana dashboard built on it."""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gearshift.gateway.app import GAUGES, TOTALS
from gearshift.trace import Call, Trace
from gearshift.watch import CONTENT_TYPE, Baseline, Counters, Watch, WatchReport, render_metrics
from gearshift.watch.prometheus import TEAM_LABELS, TEAM_TRACKED, escape_label
from tests.support.watch_helpers import (
    STRONG,
    STRONG_COST,
    WEAK,
    WEAK_COST,
    batch,
    cascade_trace,
    watch_config,
)

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? (\S+)$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"')


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """A strict reader of the text format 0.0.4: every sample belongs to a family TYPEd before it."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, f"second HELP for {name}"
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped") and name not in types
            types[name] = kind
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, labels_text, value = m.groups()
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
            assert family in types, f"{name} has no TYPE line before it"
            labels = {k: _unescape(v) for k, v in LABEL_RE.findall(labels_text or "")}
            samples.append((name, labels, float(value)))
    return types, samples


def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    found = [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_counters_render_and_parse() -> None:
    counters = Counters()
    traces = batch(10, escalated_share=0.2, agree_share=0.5, latency_ms=300.0)
    traces.append(cascade_trace(status=502, latency_ms=20_000.0))
    for t in traces:
        counters.observe(t)
    counters.sync_shadow_dropped({"queue_full": 2, "budget": 1})  # the shadower keeps the drop counts
    types, samples = parse(render_metrics(counters))
    assert types["gearshift_requests_total"] == "counter"
    assert types["gearshift_request_duration_seconds"] == "histogram"
    assert value(samples, "gearshift_requests_total", router="cascade", model=WEAK, status="200") == 8
    assert value(samples, "gearshift_requests_total", router="cascade", model=STRONG, status="200") == 2
    assert value(samples, "gearshift_requests_total", router="cascade", model="none", status="502") == 1
    assert value(samples, "gearshift_calls_total", model=WEAK, role="primary", status="502") == 1
    assert value(samples, "gearshift_calls_total", model="length", role="gate", status="422") == 2
    assert value(samples, "gearshift_cost_usd_total", model=WEAK, role="primary") == pytest.approx(10 * WEAK_COST)
    assert value(samples, "gearshift_cost_usd_total", model=STRONG, role="shadow") == pytest.approx(8 * STRONG_COST)
    assert value(samples, "gearshift_shadow_total") == 8
    assert value(samples, "gearshift_shadow_verdicts_total", result="agree") == 4
    assert value(samples, "gearshift_shadow_dropped_total", reason="queue_full") == 2
    # Histogram: cumulative buckets, +Inf equals the count, the sum is in seconds.
    buckets = [(lab["le"], v) for n, lab, v in samples if n == "gearshift_request_duration_seconds_bucket"]
    les = [float(le) for le, _ in buckets]
    assert les == sorted(les) and buckets[-1][0] == "+Inf" and math.isinf(les[-1])
    counts = [v for _, v in buckets]
    assert counts == sorted(counts)
    assert value(samples, "gearshift_request_duration_seconds_bucket", router="cascade", le="0.25") == 0
    assert value(samples, "gearshift_request_duration_seconds_bucket", router="cascade", le="0.5") == 10
    assert value(samples, "gearshift_request_duration_seconds_bucket", router="cascade", le="10") == 10
    assert value(samples, "gearshift_request_duration_seconds_bucket", router="cascade", le="30") == 11
    assert value(samples, "gearshift_request_duration_seconds_count", router="cascade") == 11
    assert value(samples, "gearshift_request_duration_seconds_sum", router="cascade") == pytest.approx(23.0)
    assert value(samples, "gearshift_requests_total", router="cascade", model=WEAK, status="200", endpoint="chat") == 8


def test_tokens_upstream_latency_first_token_and_in_flight() -> None:
    counters = Counters()
    for t in batch(10, escalated_share=0.2, agree_share=0.5):  # 100 in, 50 out, 40 ms per answer
        counters.observe(t)
    counters.first_token(WEAK, 0.3)
    counters.first_token(WEAK, 0.02)
    counters.in_flight += 3
    types, samples = parse(render_metrics(counters))
    assert types["gearshift_tokens_total"] == "counter"
    # weak answers all 10 requests; strong escalates 2; 8 weak answers are shadowed by strong, then judged by strong
    assert value(samples, "gearshift_tokens_total", model=WEAK, router="cascade", direction="input") == 10 * 100
    assert value(samples, "gearshift_tokens_total", model=WEAK, router="cascade", direction="output") == 10 * 50
    assert value(samples, "gearshift_tokens_total", model=STRONG, router="cascade", direction="input") == \
        (2 + 8) * 100 + 8 * 200
    assert not [lab for n, lab, _ in samples if n == "gearshift_tokens_total" and lab["model"] == "length"]
    assert types["gearshift_upstream_duration_seconds"] == "histogram"
    assert value(samples, "gearshift_upstream_duration_seconds_count", model=WEAK, role="primary") == 10
    assert value(samples, "gearshift_upstream_duration_seconds_bucket", model=WEAK, role="primary", le="0.025") == 0
    assert value(samples, "gearshift_upstream_duration_seconds_bucket", model=WEAK, role="primary", le="0.05") == 10
    assert value(samples, "gearshift_upstream_duration_seconds_sum", model=WEAK, role="primary") == pytest.approx(0.4)
    assert value(samples, "gearshift_upstream_duration_seconds_count", model=STRONG, role="shadow") == 8
    # A gate run is no upstream call: it has no latency series of its own.
    assert not [lab for n, lab, _ in samples if n.startswith("gearshift_upstream") and lab["role"] == "gate"]
    assert types["gearshift_time_to_first_token_seconds"] == "histogram"
    assert value(samples, "gearshift_time_to_first_token_seconds_bucket", model=WEAK, le="0.025") == 1
    assert value(samples, "gearshift_time_to_first_token_seconds_bucket", model=WEAK, le="0.5") == 2
    assert value(samples, "gearshift_time_to_first_token_seconds_sum", model=WEAK) == pytest.approx(0.32)
    assert types["gearshift_requests_in_flight"] == "gauge"
    assert value(samples, "gearshift_requests_in_flight") == 3


def test_merged_states_add_up_as_one_process() -> None:
    """Workers' states merged: counters and histograms as one process that saw every request; gauges
    only from the live ones."""
    traces = batch(12, escalated_share=0.25, agree_share=0.5, latency_ms=300.0) + [cascade_trace(status=502)]
    one, a, b = Counters(), Counters(), Counters()
    for i, t in enumerate(traces):
        one.observe(t)
        (a if i % 2 else b).observe(t)
    for c in (one, a):
        c.first_token(WEAK, 0.2)
        c.record_report(WatchReport([], 0, None, None, "", 0), ["escalation_rate"])
    a.sync_shadow_dropped({"queue_full": 2})
    one.sync_shadow_dropped({"queue_full": 2})
    a.in_flight, b.in_flight = 2, 5
    # Through JSON, as the files carry them.
    states = [json.loads(json.dumps(c.state())) for c in (a, b)]
    merged = Counters.merged(states, live=states[:1])
    one.in_flight = 2
    merged.report = one.report  # the watch's report is no count: the answering process's stands
    expected = {(n, tuple(sorted(lab.items()))): v for n, lab, v in parse(render_metrics(one))[1]}
    got = {(n, tuple(sorted(lab.items()))): v for n, lab, v in parse(render_metrics(merged))[1]}
    assert got == pytest.approx(expected)  # sums of costs and seconds, added in another order
    assert Counters.merged(states).in_flight == 0  # no live process: no one is answering anything


def test_watch_gauges_keep_one_unit_per_family() -> None:
    """Latency percentiles leave gearshift_watch_value (unitless figures) for families of their own, in seconds."""
    text, report = _every_family()
    types, samples = parse(text)
    in_value = {lab["metric"] for n, lab, _ in samples if n in ("gearshift_watch_value", "gearshift_watch_baseline")}
    assert "escalation_rate" in in_value and "spend_ratio" in in_value
    assert not [m for m in in_value if m.endswith("_ms")]
    p95 = report.metric("latency_p95_ms")
    assert p95.value is not None and p95.baseline is not None
    assert value(samples, "gearshift_watch_latency_p95_seconds") == pytest.approx(p95.value / 1000)
    assert value(samples, "gearshift_watch_baseline_latency_p95_seconds") == pytest.approx(p95.baseline / 1000)
    assert types["gearshift_watch_latency_p95_seconds"] == "gauge"
    # Bounds and drift flags are unitless for every metric (a latency's bound is a ratio).
    assert value(samples, "gearshift_watch_drift", metric="latency_p95_ms") in (0, 1)
    assert value(samples, "gearshift_watch_window_spend_usd", kind="serving") == pytest.approx(report.spend["serving"])


def test_label_values_are_escaped() -> None:
    weird = 'we"ird\\router\nname'
    assert escape_label(weird) == 'we\\"ird\\\\router\\nname'
    counters = Counters()
    counters.observe(cascade_trace(router=weird))
    counters.observe_shadow([Call(model=STRONG, role="shadow", cost_usd=0.5)],
                            [{"gate": "shadow_agreement", "model": WEAK, "passed": False},
                             {"gate": "shadow_reference", "model": STRONG, "passed": True}])
    counters.sync_shadow_dropped({"queue_full": 7})
    text = render_metrics(counters)
    assert "\nname" not in text.replace("\\nname", "")  # no raw newline inside a label
    _, samples = parse(text)
    assert value(samples, "gearshift_requests_total", router=weird, model=WEAK, status="200") == 1
    assert value(samples, "gearshift_shadow_total") == 1
    assert value(samples, "gearshift_shadow_verdicts_total", result="disagree") == 1
    assert [n for n, lab, _ in samples if n == "gearshift_shadow_verdicts_total"] == ["gearshift_shadow_verdicts_total"]
    assert value(samples, "gearshift_shadow_dropped_total", reason="queue_full") == 7
    assert value(samples, "gearshift_cost_usd_total", model=STRONG, role="shadow") == 0.5


def _every_family() -> tuple[str, WatchReport]:
    """Metrics text with every family the gateway serves: requests, calls, shadow, watch, store."""
    config = watch_config(quality_floor=0.9)
    report = Watch(config).check(batch(100, escalated_share=0.5, agree_share=0.8),
                                 Baseline.from_traces(batch(200, escalated_share=0.2, agree_share=0.98), config))
    counters = Counters()
    for i, t in enumerate(batch(10, escalated_share=0.2, agree_share=0.5, latency_ms=300.0)):
        t.cache = ("hit", "miss", "bypass", "skip", None)[i % 5]
        counters.observe(t)
    counters.sync_shadow_dropped({"queue_full": 2})
    counters.record_report(report, [m.name for m in report.drifted])
    counters.first_token(WEAK, 0.4)
    counters.limit("team", "usd_day")
    counters.in_flight = 1
    circuits = {WEAK: {"state": "open", "trips": 2, "consecutive_failures": 5}}
    routers = {"cascade": {"state": "observing", "pairs": 12}}
    # The gateway's own gauges and totals, as its /metrics handler names them.
    gauges = {name: (help_text, 3) for name, help_text in GAUGES.values()}
    totals = {name: (help_text, 7) for name, help_text in TOTALS.values()}
    return render_metrics(counters, report, gauges, totals, circuits=circuits, routers=routers), report


# Every family /metrics serves (with a report, circuits, router states): the promtool run covers each.
FAMILIES = {
    "gearshift_requests_total", "gearshift_calls_total", "gearshift_cost_usd_total", "gearshift_tokens_total",
    "gearshift_request_duration_seconds", "gearshift_upstream_duration_seconds",
    "gearshift_time_to_first_token_seconds", "gearshift_requests_in_flight", "gearshift_shadow_total",
    "gearshift_shadow_dropped_total", "gearshift_shadow_verdicts_total", "gearshift_watch_checks_total",
    "gearshift_watch_alerts_total", "gearshift_watch_value", "gearshift_watch_baseline", "gearshift_watch_bound",
    "gearshift_watch_drift", "gearshift_watch_lower", "gearshift_watch_upper",
    "gearshift_watch_latency_p95_seconds", "gearshift_watch_baseline_latency_p95_seconds", "gearshift_watch_window_spend_usd",
    "gearshift_watch_window_requests", "gearshift_watch_last_check_timestamp_seconds",
    "gearshift_model_circuit_open", "gearshift_model_circuit_trips_total", "gearshift_model_consecutive_failures",
    "gearshift_router_state", "gearshift_router_proof_pairs", "gearshift_traces_pending",
    "gearshift_traces_written_total", "gearshift_traces_updated_total", "gearshift_traces_failed_total",
    "gearshift_traces_dropped_total", "gearshift_unauthenticated_requests_total", "gearshift_cache_requests_total",
    "gearshift_cache_store_failures_total",
    "gearshift_limited_requests_total",
}


def test_report_gauges() -> None:
    text, report = _every_family()
    types, samples = parse(text)
    assert types["gearshift_watch_value"] == "gauge"
    assert value(samples, "gearshift_watch_value", metric="escalation_rate") == pytest.approx(0.5)
    assert value(samples, "gearshift_watch_baseline", metric="escalation_rate") == pytest.approx(0.2)
    assert value(samples, "gearshift_watch_drift", metric="escalation_rate") == 1
    assert value(samples, "gearshift_watch_drift", metric="psi_prompt_tokens") == 0
    q = report.metric("quality_retained")
    assert value(samples, "gearshift_watch_lower", metric="quality_retained") == pytest.approx(q.lower)
    assert value(samples, "gearshift_watch_value", metric="psi_prompt_tokens") == pytest.approx(0.0)
    assert value(samples, "gearshift_watch_alerts_total", metric="quality_retained") == 1
    assert value(samples, "gearshift_watch_window_requests") == 100
    assert value(samples, "gearshift_traces_pending") == 3
    assert value(samples, "gearshift_traces_written_total") == 7
    assert types["gearshift_traces_written_total"] == "counter" and types["gearshift_traces_pending"] == "gauge"


def test_metrics_served_over_http() -> None:
    """The wiring the gateway uses: a GET /metrics handler returning render_metrics with CONTENT_TYPE."""
    counters = Counters()
    for t in batch(5):
        counters.observe(t)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=render_metrics(counters).encode(), headers={"Content-Type": CONTENT_TYPE})

    async def run() -> tuple[int, str, str]:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
                return r.status, r.headers["Content-Type"], await r.text()
        finally:
            await runner.cleanup()

    status, ctype, text = asyncio.run(run())
    assert status == 200 and ctype == "text/plain; version=0.0.4; charset=utf-8"
    _, samples = parse(text)
    assert value(samples, "gearshift_requests_total", router="cascade", model=WEAK, status="200") == 4


def test_gateway_side_imports_do_not_load_numpy() -> None:
    # A gateway with the watch off serves /metrics without importing the analysis code.
    code = ("import sys; from gearshift.watch import CONTENT_TYPE, Counters, WatchLoop, render_metrics; "
            "render_metrics(Counters()); print('numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_promtool_accepts_the_metrics() -> None:
    """Prometheus's own linter (Debian's `prometheus` package, installed by .ci/run) on every family."""
    import shutil

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found: install Debian's `prometheus` package (.ci/run does)")
    text, _ = _every_family()
    types, _ = parse(text)
    assert set(types) >= FAMILIES, FAMILIES - set(types)
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr


DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana-dashboard.json"


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_dashboard_queries_only_served_families() -> None:
    """Every PromQL expression of examples/grafana-dashboard.json names families /metrics serves."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 30 and dashboard["panels"]
    for p in dashboard["panels"]:
        assert {"type", "title", "gridPos", "id"} <= set(p)
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    types, _ = parse(_every_family()[0])
    histograms = {n for n, k in types.items() if k == "histogram"}
    exprs = _expressions(dashboard)
    used = set()
    for e in exprs:
        for name in re.findall(r"\bgearshift_[a-z0-9_]+", e):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            used.add(base if base in histograms else name)
    assert used and used <= set(types), used - set(types)
    # The panels the dashboard promises are there.
    for family in ("gearshift_requests_total", "gearshift_time_to_first_token_seconds", "gearshift_tokens_total",
                   "gearshift_upstream_duration_seconds", "gearshift_cost_usd_total", "gearshift_traces_pending",
                   "gearshift_watch_latency_p95_seconds", "gearshift_requests_in_flight"):
        assert family in used, family


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses every expression (Grafana's variables replaced by what they stand for)."""
    import shutil

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found: install Debian's `prometheus` package (.ci/run does)")
    exprs = [e.replace("$__rate_interval", "5m").replace("$router", ".*")
             for e in _expressions(json.loads(DASHBOARD.read_text()))]
    exprs = [e for e in exprs if not e.startswith("label_values(")]  # a Grafana function, not PromQL
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:expr{i}", "expr": e}
                                                        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))  # YAML is a superset of JSON: promtool reads it
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_team_labels_are_bounded_and_the_rest_fold_into_other() -> None:
    c = Counters()
    teams = [f"team-{i:04d}" for i in range(TEAM_TRACKED + 20)]
    for name in [*teams, None]:
        c.observe(Trace(router="auto", requested_model="auto", team=name, final_model="small",
                        calls=[Call(model="small", role="primary", input_tokens=1, output_tokens=1, cost_usd=0.5)]))
    assert len(c.team_requests) == TEAM_TRACKED + 2  # memory: the first TEAM_TRACKED names, `other`, `none`
    _, samples = parse(render_metrics(c))
    labels = {s[1]["team"] for s in samples if s[0] == "gearshift_team_requests_total"}
    assert labels == {*teams[:TEAM_LABELS], "other", "none"}  # the first TEAM_LABELS by name, other, none
    assert value(samples, "gearshift_team_requests_total", team="other") == len(teams) - TEAM_LABELS
    assert value(samples, "gearshift_spend_usd_total", team="none") == 0.5
    assert sum(s[2] for s in samples if s[0] == "gearshift_spend_usd_total") == 0.5 * (len(teams) + 1)
