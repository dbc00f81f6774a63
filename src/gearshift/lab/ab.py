"""A/B comparison of router arms on live traces: quality (gates, shadow agreement, feedback), cost
and latency per arm, with bootstrap intervals and a Welch test of each difference against control."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gearshift.lab.bootstrap import Estimate, bootstrap

SIGNALS = ("cost_usd", "latency_ms", "gate_pass", "shadow_agreement", "feedback")


@dataclass
class Difference:
    """arm - control for one signal: the point difference, its interval and Welch's p-value."""

    signal: str
    diff: Estimate
    p_value: float
    n_arm: int
    n_control: int


@dataclass
class Arm:
    name: str
    requests: int
    signals: dict[str, Estimate] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    latency_p95_ms: float | None = None


@dataclass
class ABReport:
    control: str
    arms: list[Arm]
    differences: dict[str, list[Difference]]  # arm name -> differences against control


def _values(traces: list[Mapping[str, Any]], feedback: Mapping[str, list[float]]) -> dict[str, np.ndarray]:
    """Per-trace values of each signal (NaN where a trace carries no such signal)."""
    out: dict[str, list[float]] = {s: [] for s in SIGNALS}
    for t in traces:
        out["cost_usd"].append(float(t["cost_usd"]))
        out["latency_ms"].append(float(t["latency_ms"]))
        gates = [v for v in t.get("verdicts") or [] if not str(v.get("gate", "")).startswith("shadow_")]
        out["gate_pass"].append(float(all(v.get("passed") for v in gates)) if gates else np.nan)
        agree = [v for v in t.get("verdicts") or [] if v.get("gate") == "shadow_agreement"]
        out["shadow_agreement"].append(float(agree[-1].get("score", np.nan)) if agree else np.nan)
        fb = feedback.get(t["id"])
        out["feedback"].append(float(np.mean(fb)) if fb else np.nan)
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def _mean_estimate(values: np.ndarray, n: int, seed: int) -> Estimate | None:
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return None
    return bootstrap(v, lambda d, w: w @ d / len(d), n=n, seed=seed, weighted=True)  # type: ignore[return-value]


def _difference(a: np.ndarray, b: np.ndarray, n: int, seed: int) -> tuple[Estimate, float] | None:
    """Bootstrap interval of mean(a) - mean(b), resampling each arm independently, and Welch's p."""
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    rng = np.random.default_rng(seed)
    ma = rng.multinomial(len(a), np.full(len(a), 1 / len(a)), size=n) @ a / len(a)
    mb = rng.multinomial(len(b), np.full(len(b), 1 / len(b)), size=n) @ b / len(b)
    lo, hi = np.quantile(ma - mb, [0.025, 0.975])
    if np.var(a) == 0 and np.var(b) == 0:
        p = 1.0 if a[0] == b[0] else 0.0
    else:
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Estimate(float(a.mean() - b.mean()), float(lo), float(hi), 0.05, n), p


def ab_report(traces: Iterable[Mapping[str, Any]], feedback: Iterable[Mapping[str, Any]] = (),
              control: str | None = None, router: str | None = None, n: int = 1000, seed: int = 0) -> ABReport:
    """Compare the arms of answered traces (a split router's `arm`, else the router) against `control`.

    control: the arm to compare with (default: the arm whose routes send everything to one model,
    if named so by the caller; else the first arm by name)."""
    by_arm: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for t in traces:
        if t["status"] != 200 or (router is not None and t["router"] != router):
            continue
        by_arm[t.get("arm") or t["router"]].append(t)
    if len(by_arm) < 2:
        raise ValueError(f"need answered traces from at least two arms; found {sorted(by_arm) or 'none'}")
    fb: dict[str, list[float]] = defaultdict(list)
    for f in feedback:
        fb[str(f["trace_id"])].append(float(f["score"]))
    names = sorted(by_arm)
    control = control or names[0]
    if control not in by_arm:
        raise ValueError(f"control arm {control!r} has no traces; arms: {names}")
    values = {a: _values(by_arm[a], fb) for a in names}
    arms = []
    for a in names:
        arm = Arm(a, len(by_arm[a]), latency_p95_ms=float(np.percentile(values[a]["latency_ms"], 95)))
        for s in SIGNALS:
            est = _mean_estimate(values[a][s], n, seed)
            arm.counts[s] = int(np.count_nonzero(~np.isnan(values[a][s])))
            if est is not None:
                arm.signals[s] = est
        arms.append(arm)
    diffs: dict[str, list[Difference]] = {}
    for a in names:
        if a == control:
            continue
        rows = []
        for s in SIGNALS:
            d = _difference(values[a][s], values[control][s], n, seed)
            if d is not None:
                rows.append(Difference(s, d[0], d[1], int(np.count_nonzero(~np.isnan(values[a][s]))),
                                       int(np.count_nonzero(~np.isnan(values[control][s])))))
        diffs[a] = rows
    return ABReport(control, arms, diffs)


def print_ab(report: ABReport) -> None:
    """Rich tables: each arm's signals, then each arm's differences against control."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    t = Table(title=f"A/B arms (control: {report.control}); means with 95% bootstrap intervals")
    t.add_column("arm")
    t.add_column("requests", justify="right")
    for s in SIGNALS:
        t.add_column(s, justify="right")
    for arm in report.arms:
        cells = []
        for s in SIGNALS:
            est = arm.signals.get(s)
            spec = ".6f" if s == "cost_usd" else ".1f" if s == "latency_ms" else ".3f"
            cells.append(f"{est.format(spec)} (n={arm.counts[s]})" if est else "-")
        t.add_row(arm.name, str(arm.requests), *cells)
    console.print(t)
    for name, rows in report.differences.items():
        d = Table(title=f"{name} - {report.control}: difference of means, 95% interval, Welch p-value")
        for col in ("signal", "difference", "p-value", "n arm / control"):
            d.add_column(col)
        for r in rows:
            spec = ".6f" if r.signal == "cost_usd" else ".1f" if r.signal == "latency_ms" else ".3f"
            d.add_row(r.signal, r.diff.format(spec), f"{r.p_value:.3g}", f"{r.n_arm} / {r.n_control}")
        console.print(d)
