"""Prometheus text exposition: counters, histogram, label escaping, report gauges, served over HTTP."""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import sys

import aiohttp
import pytest
from aiohttp import web

from gearshift.trace import Call
from gearshift.watch import CONTENT_TYPE, Baseline, Counters, Watch, WatchReport, render_metrics
from gearshift.watch.prometheus import escape_label
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
    for t in batch(10, escalated_share=0.2, agree_share=0.5, latency_ms=300.0):
        counters.observe(t)
    counters.sync_shadow_dropped({"queue_full": 2})
    counters.record_report(report, [m.name for m in report.drifted])
    return render_metrics(counters, report, gauges={"gearshift_traces_pending": ("Traces queued.", 3)},
                          totals={"gearshift_traces_written_total": ("Traces written.", 7)}), report


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
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr
