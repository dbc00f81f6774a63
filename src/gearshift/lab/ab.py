"""A/B comparison of router arms on live traces: quality (gates, shadow agreement, feedback), cost
and latency per arm, with bootstrap intervals (normal ones for big, varied samples) and a Welch test
of each difference against control."""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gearshift.lab.bootstrap import Estimate, estimate, normal_estimate
from gearshift.store.base import ABRows
from gearshift.store.view import SHADOW_GATE

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


def _values(rows: ABRows, feedback: Mapping[str, list[float]]) -> dict[str, np.ndarray]:
    """Each signal's value per row (NaN where a trace carries no such signal), a column at a time."""
    gates, passed = np.asarray(rows.verdicts_n, dtype=float), np.asarray(rows.verdicts_passed, dtype=float)
    agreement, scored = np.full(len(gates), np.nan), np.full(len(gates), np.nan)
    for i, verdicts in rows.verdicts.items():
        agree = [v for v in verdicts if v.get("gate") == SHADOW_GATE]
        score = agree[-1].get("score") if agree else None
        if isinstance(score, int | float):
            agreement[i] = float(score)
    if feedback:
        for i, trace_id in enumerate(rows.id):
            fb = feedback.get(trace_id)
            if fb:
                scored[i] = float(np.mean(fb))
    with np.errstate(invalid="ignore"):
        gate_pass = np.where(gates > 0, (passed == gates).astype(float), np.nan)
    return {"cost_usd": np.asarray(rows.cost_usd, dtype=float), "latency_ms": np.asarray(rows.latency_ms, dtype=float),
            "gate_pass": gate_pass, "shadow_agreement": agreement, "feedback": scored}


# The bootstrap of a mean resamples the values: drawn as a multinomial over the distinct values'
# frequencies (the same distribution; a 0/1 signal is two values), while distinct values x resamples stay
# under BOOTSTRAP_CELLS. Beyond that (thousands of distinct costs or latencies), the interval is the
# normal one the bootstrap converges to: mean +- z * sd / sqrt(n), with no resamples.
BOOTSTRAP_CELLS = 2_000_000


@dataclass
class _Signal:
    """One arm's values of one signal and, when drawn, its bootstrap means."""

    values: np.ndarray
    means: np.ndarray | None

    @classmethod
    def of(cls, values: np.ndarray, n: int, rng: np.random.Generator) -> _Signal:
        v = np.sort(values[~np.isnan(values)])  # in order: the draws do not depend on how the traces were read
        if len(v) == 0:
            return cls(v, None)
        levels, counts = np.unique(v, return_counts=True)
        if len(levels) * n <= BOOTSTRAP_CELLS:
            return cls(v, rng.multinomial(len(v), counts / len(v), size=n) @ levels / len(v))
        return cls(v, None)

    @property
    def variance_of_mean(self) -> float:
        return float(np.var(self.values) / len(self.values))

    def estimate(self) -> Estimate:
        mean = float(self.values.mean())
        return estimate(mean, self.means) if self.means is not None else normal_estimate(mean, self.variance_of_mean)


def _difference(a: _Signal, b: _Signal) -> tuple[Estimate, float] | None:
    """The interval of mean(a) - mean(b) (each arm resampled independently; or the normal one), and Welch's p."""
    if len(a.values) < 2 or len(b.values) < 2:
        return None
    from scipy import stats

    diff = float(a.values.mean() - b.values.mean())
    if a.means is not None and b.means is not None:
        est = estimate(diff, a.means - b.means)
    else:
        est = normal_estimate(diff, a.variance_of_mean + b.variance_of_mean)
    if _constant(a.values) and _constant(b.values):
        p = 1.0 if np.isclose(a.values[0], b.values[0], rtol=1e-9, atol=0.0) else 0.0
    else:
        with warnings.catch_warnings():
            # An arm whose values differ only in their last bits (a price times the same tokens) has no variance
            # to speak of; scipy says so, and its p-value is still the right one for the other arm's spread.
            warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
            p = float(stats.ttest_ind(a.values, b.values, equal_var=False).pvalue)
    return est, p


def _constant(values: np.ndarray) -> bool:
    """Every value the same, up to float rounding."""
    return bool(np.ptp(values) <= 1e-9 * float(np.abs(values).max()))


def ab_report(traces: ABRows | Iterable[Mapping[str, Any]], feedback: Iterable[Mapping[str, Any]] = (),
              control: str | None = None, router: str | None = None, n: int = 1000, seed: int = 0) -> ABReport:
    """Compare the arms of answered traces (a split router's `arm`, else the router) against `control`.

    traces: `TraceStore.ab_rows` (the columns the signals need, read in SQL), or stored traces.
    control: the arm to compare with (default: the arm whose routes send everything to one model,
    if named so by the caller; else the first arm by name)."""
    rows = traces if isinstance(traces, ABRows) else ABRows.of(traces)
    label = np.asarray([a or r for a, r in zip(rows.arm, rows.router, strict=True)], dtype=object)
    keep = np.asarray(rows.status, dtype=int) == 200
    if router is not None:
        keep &= np.asarray(rows.router, dtype=object) == router
    by_arm = {a: keep & (label == a) for a in sorted(set(label[keep]))}
    if len(by_arm) < 2:
        raise ValueError(f"need answered traces from at least two arms; found {sorted(by_arm) or 'none'}")
    fb: dict[str, list[float]] = defaultdict(list)
    for f in feedback:
        fb[str(f["trace_id"])].append(float(f["score"]))
    names = sorted(by_arm)
    control = control or names[0]
    if control not in by_arm:
        raise ValueError(f"control arm {control!r} has no traces; arms: {names}")
    every = _values(rows, fb)
    values = {a: {s: v[by_arm[a]] for s, v in every.items()} for a in names}
    signals = {a: {s: _Signal.of(values[a][s], n, np.random.default_rng([seed, i, j])) for j, s in enumerate(SIGNALS)}
               for i, a in enumerate(names)}
    arms = []
    for a in names:
        arm = Arm(a, int(by_arm[a].sum()), latency_p95_ms=float(np.percentile(values[a]["latency_ms"], 95)))
        for s in SIGNALS:
            sig = signals[a][s]
            arm.counts[s] = len(sig.values)
            if len(sig.values):
                arm.signals[s] = sig.estimate()
        arms.append(arm)
    diffs: dict[str, list[Difference]] = {}
    for a in names:
        if a == control:
            continue
        found = []
        for s in SIGNALS:
            d = _difference(signals[a][s], signals[control][s])
            if d is not None:
                found.append(Difference(s, d[0], d[1], len(signals[a][s].values), len(signals[control][s].values)))
        diffs[a] = found
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
