"""The `gearshift traces` summary: requests, spend by model, and savings against always-strongest; and the same
per key or per team (`--by key|team`) with the quality its shadow pairs retained."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from gearshift.config import Config
from gearshift.store.rollup import Histogram
from gearshift.store.view import PairEstimate, Totals, TraceView, cache_line

BY = {"key": "client", "team": "team"}  # --by choice -> the TraceView field naming the owner


def _pct(values: list[float] | Histogram, q: float) -> float | None:
    if isinstance(values, Histogram):  # the dashboard's rollups: to the histogram's resolution
        return values.percentile(q)
    return float(np.percentile(values, q)) if values else None


def summarise(rows: Iterable[Mapping[str, Any] | TraceView], config: Config,
              reference: str | None = None) -> dict[str, Any]:
    """Aggregate traces into the figures `gearshift traces` prints."""
    totals = Totals()
    tier1: list[float] = []
    escalated: list[float] = []
    calls: list[tuple[str, str, int, float]] = []
    for t in map(TraceView.of, rows):
        totals.add(t, None)
        calls += [(c.model, c.role, 1, c.cost_usd) for c in t.calls]
        if t.answered:
            if t.escalated:
                escalated.append(t.latency_ms)
            elif t.gated:
                tier1.append(t.latency_ms)
    return summary_of(totals, config, reference, tier1, escalated, calls)


def summary_of(totals: Totals, config: Config, reference: str | None, tier1: list[float] | Histogram,
               escalated: list[float] | Histogram,
               calls: Iterable[tuple[str, str, int, float]]) -> dict[str, Any]:
    """The summary from traces' Totals, the latencies of the answered requests accepted at tier 1 (gated, not
    escalated) and of the escalated ones, and (model, role, calls, USD) of their calls: the one way
    `summarise` and the dashboard's SQL sums become figures."""
    reference = reference or config.strongest()
    spend: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    calls_by_model: dict[str, int] = defaultdict(int)
    for model, role, n, usd in calls:
        spend[model][role] += usd
        calls_by_model[model] += n
    counterfactual = totals.counterfactual_cost(config.models[reference].price)
    actual = totals.spend_usd
    cascade = None
    if tier1 or escalated:
        total = len(tier1) + len(escalated)
        cascade = {
            "gated_requests": total,
            "escalation_rate": len(escalated) / total,
            "accepted_at_tier1": {"count": len(tier1), "latency_p50_ms": _pct(tier1, 50), "latency_p95_ms": _pct(tier1, 95)},
            "escalated": {"count": len(escalated), "latency_p50_ms": _pct(escalated, 50),
                          "latency_p95_ms": _pct(escalated, 95)},
        }
    return {
        "requests": totals.requests,
        "errors": totals.errors,
        "streamed": totals.streamed,
        "by_router": dict(totals.by_router),
        "by_endpoint": dict(totals.by_endpoint),
        "spend_by_model": {m: {"total": sum(r.values()), **r} for m, r in spend.items()},
        "calls_by_model": dict(calls_by_model),
        "spend_usd": actual,
        "reference_model": reference,
        "counterfactual_usd_estimate": counterfactual,
        "savings_usd_estimate": counterfactual - actual,
        "savings_pct_estimate": (counterfactual - actual) / counterfactual * 100 if counterfactual > 0 else None,
        "calls_with_estimated_usage": totals.estimated_calls,
        "cascade": cascade,
        # Hits cost nothing and are not in the routing savings above (no call answered them): their own saving.
        "cache": totals.cache_figures(),
    }


def summarise_by(rows: Iterable[Mapping[str, Any] | TraceView], config: Config, by: str,
                 reference: str | None = None) -> list[dict[str, Any]]:
    """Per key or team (`by`): requests, errors, spend, savings against always-`reference` (estimate), and
    quality retained on its shadow pairs (PairEstimate: the same estimator as the watch and `lab check`)."""
    field = BY[by]
    groups: dict[str | None, list[TraceView]] = defaultdict(list)
    for t in map(TraceView.of, rows):
        groups[getattr(t, field)].append(t)
    out = []
    for owner in sorted(groups, key=lambda o: (o is None, o or "")):
        views = groups[owner]
        s = summarise(views, config, reference)
        est = PairEstimate.of_traces(views)
        out.append({by: owner, "requests": s["requests"], "errors": s["errors"], "spend_usd": s["spend_usd"],
                    "counterfactual_usd_estimate": s["counterfactual_usd_estimate"],
                    "savings_usd_estimate": s["savings_usd_estimate"], "savings_pct_estimate": s["savings_pct_estimate"],
                    "pairs": est.pairs, "quality_retained": est.retained, "quality_retained_interval": est.interval(),
                    "lower_bound": est.lower_bound, "reference_model": s["reference_model"]})
    return out


def print_by(groups: list[dict[str, Any]], by: str) -> None:
    """Print per-key or per-team figures as a rich table."""
    from rich.console import Console
    from rich.table import Table

    reference = groups[0]["reference_model"] if groups else "strongest"
    table = Table(title=f"by {by}: spend, savings against always-{reference} (estimate), quality retained on "
                  "shadow pairs")
    for col in (by, "requests", "errors", "spend $", "savings $", "savings %", "pairs", "quality retained"):
        table.add_column(col, justify="left" if col == by else "right")
    for g in groups:
        pct, kept, iv = g["savings_pct_estimate"], g["quality_retained"], g["quality_retained_interval"]
        quality = "-" if kept is None else f"{kept:.1%}" + (f" [{iv[0]:.1%}, {iv[1]:.1%}]" if iv else "") + (
            " (lower bound)" if g["lower_bound"] else "")
        table.add_row(g[by] or "(none)", str(g["requests"]), str(g["errors"]), f"{g['spend_usd']:.6f}",
                      f"{g['savings_usd_estimate']:.6f}", "-" if pct is None else f"{pct:.1f}%", str(g["pairs"]),
                      quality)
    Console(width=160).print(table)


def print_summary(s: dict[str, Any]) -> None:
    """Print the summary as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{s['requests']}[/] requests, {s['errors']} errors, {s['streamed']} streamed; "
                  f"by router: " + ", ".join(f"{k} {v}" for k, v in sorted(s["by_router"].items()))
                  + "; by endpoint: " + ", ".join(f"{k} {v}" for k, v in sorted(s["by_endpoint"].items())))
    table = Table(title="spend by model (USD)")
    table.add_column("model")
    table.add_column("calls", justify="right")
    table.add_column("total", justify="right")
    table.add_column("by role")
    for model, r in sorted(s["spend_by_model"].items(), key=lambda kv: -kv[1]["total"]):
        roles = ", ".join(f"{k} {v:.6f}" for k, v in r.items() if k != "total")
        table.add_row(model, str(s["calls_by_model"].get(model, 0)), f"{r['total']:.6f}", roles)
    console.print(table)
    pct = s["savings_pct_estimate"]
    console.print(f"spend ${s['spend_usd']:.6f}; always-{s['reference_model']} would have cost "
                  f"${s['counterfactual_usd_estimate']:.6f} (estimate from tokens and prices); "
                  f"savings ${s['savings_usd_estimate']:.6f}" + (f" ({pct:.1f}%, estimate)" if pct is not None else ""))
    if s["calls_with_estimated_usage"]:
        console.print(f"[yellow]{s['calls_with_estimated_usage']} calls had no upstream usage: their tokens are estimates[/]")
    if s["cache"]["requests"]:
        console.print(cache_line(s["cache"]))
    c = s["cascade"]
    if c:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        t = Table(title=f"cascades: escalation rate {c['escalation_rate'] * 100:.1f}% of {c['gated_requests']} gated requests")
        for col in ("group", "requests", "latency p50 ms", "latency p95 ms"):
            t.add_column(col)
        for label, key in (("accepted at tier 1", "accepted_at_tier1"), ("escalated", "escalated")):
            g = c[key]
            t.add_row(label, str(g["count"]), ms(g["latency_p50_ms"]), ms(g["latency_p95_ms"]))
        console.print(t)
