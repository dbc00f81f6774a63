"""Baseline, population stability index, and the check of a window against the baseline.

PSI (population stability index) of a baseline histogram b and a window histogram w over the same
bins: `sum_i (w_i - b_i) * ln(w_i / b_i)` on proportions, each floored at PSI_EPS so an empty bin
does not make it infinite. The customary reading: below 0.1 no real shift, 0.1 to 0.25 a moderate
shift, above 0.25 a significant one (the default bound). A check's bound is that, raised to the PSI
sampling alone exceeds with probability `watch.psi_false_alarm` (psi_bound, simulated). Sampling alone gives about
`(k - 1) * (1/n_b + 1/n_w)` for k bins (the chi-square approximation): ~0.06 for 10 bins, a
500-trace baseline and a 200-trace window, so windows much smaller than 100 traces are noisy.

Bin edges are fixed at baseline time (the baseline's deciles by default) and stored in it; bins are
right-closed: (-inf, e0], (e0, e1], ..., (e_last, +inf).

The baseline JSON (format `gearshift-watch-baseline/1`, see docs/watch.md) is plain:

    {"format": "gearshift-watch-baseline/1", "source": "...", "created": 1732700000.0, "n": 500,
     "reference": "gpt-4o", "values": {"escalation_rate": 0.21, "gate_pass_rate": 0.8, ...},
     "histograms": {"prompt_tokens": {"edges": [31.0, 40.0, ...], "counts": [50, 49, ...]},
                    "score": {"edges": [...], "counts": [...]}}}

Any value may be null (not measured); a missing histogram turns its PSI check off.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gearshift.config import Config, WatchConfig
from gearshift.store.view import TraceView
from gearshift.trace import Trace
from gearshift.watch.findings import DRIFT, INSUFFICIENT, NO_BASELINE, OFF, OK, Metric, WatchReport
from gearshift.watch.windows import WindowStats, compute_stats

__all__ = ["DRIFT", "INSUFFICIENT", "NO_BASELINE", "OFF", "OK", "Baseline", "Histogram", "Metric", "Watch",
           "WatchReport", "psi", "psi_noise"]

FORMAT = "gearshift-watch-baseline/1"
PSI_EPS = 1e-4
VALUE_KEYS = ("escalation_rate", "gate_pass_rate", "strong_share", "error_rate", "shadow_agreement",
              "quality_retained", "spend_ratio", "latency_p50_ms", "latency_p95_ms")
HISTOGRAM_KEYS = ("prompt_tokens", "score")



@dataclass(slots=True)
class Histogram:
    """Counts over fixed right-closed bins given by ascending inner edges (len(counts) = len(edges) + 1)."""

    edges: list[float]
    counts: list[int]

    @classmethod
    def fit(cls, values: Sequence[float] | np.ndarray, bins: int = 10) -> Histogram | None:
        """Edges at the values' quantiles (ties merged), counts of the values; None when empty."""
        v = np.asarray(values, dtype=float)
        if v.size == 0:
            return None
        # Edges at observed values (no interpolation), so discrete data such as token counts gets no empty bins.
        qs = np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf")
        edges = [float(e) for e in np.unique(qs)]
        h = cls(edges=edges, counts=[])
        h.counts = h.count(v).tolist()
        return h

    def count(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """How many of `values` fall in each bin."""
        v = np.asarray(values, dtype=float)
        idx = np.searchsorted(np.asarray(self.edges, dtype=float), v, side="left")
        return np.bincount(idx, minlength=len(self.edges) + 1)

    @property
    def n(self) -> int:
        return int(sum(self.counts))


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, eps: float = PSI_EPS) -> float:
    """Population stability index of two count (or proportion) vectors over the same bins."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("psi needs two non-empty count vectors of the same length")
    p = np.maximum(e / e.sum(), eps)
    q = np.maximum(a / a.sum(), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def psi_noise(bins: int, n_baseline: int, n_window: int) -> float:
    """The PSI sampling alone gives two samples of one distribution (chi-square approximation)."""
    return (bins - 1) * (1 / max(n_baseline, 1) + 1 / max(n_window, 1))


@functools.lru_cache(maxsize=256)
def psi_noise_quantile(counts: tuple[int, ...], n_window: int, q: float = 0.999, sims: int = 20000) -> float:
    """The PSI that sampling alone stays below with probability q, for a baseline histogram `counts`
    and a window of n_window: both drawn again from the baseline's proportions (a parametric
    bootstrap, seeded). Not the chi-square approximation: with ~10 expected per bin, PSI's log term
    gives it a heavier tail (measured: benchmarks/psi_bounds.py)."""
    c = np.asarray(counts, dtype=float)
    p = c / c.sum()
    rng = np.random.default_rng(0)
    b = rng.multinomial(int(c.sum()), p, size=sims) / c.sum()
    w = rng.multinomial(max(n_window, 1), p, size=sims) / max(n_window, 1)
    b, w = np.maximum(b, PSI_EPS), np.maximum(w, PSI_EPS)
    return float(np.quantile(np.sum((w - b) * np.log(w / b), axis=1), q))


def psi_bound(bound: float, counts: Sequence[int], n_window: int, q: float = 0.999) -> float:
    """The PSI a window must exceed to drift: the configured bound, raised to the sampling noise's
    q-quantile when the samples are small enough for noise alone to pass it."""
    return max(bound, psi_noise_quantile(tuple(int(x) for x in counts), int(n_window), q))


@dataclass(slots=True)
class Baseline:
    """What the router was calibrated on: rates, latency, spend ratio and input histograms."""

    n: int = 0
    source: str = ""
    created: float = field(default_factory=time.time)
    reference: str | None = None
    escalation_rate: float | None = None
    gate_pass_rate: float | None = None
    strong_share: float | None = None
    error_rate: float | None = None
    shadow_agreement: float | None = None
    quality_retained: float | None = None
    spend_ratio: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    prompt_tokens: Histogram | None = None
    score: Histogram | None = None

    @classmethod
    def from_stats(cls, s: WindowStats, bins: int = 10, source: str = "traces") -> Baseline:
        q = s.quality_retained()
        return cls(n=s.n, source=source, reference=s.reference, escalation_rate=s.escalation_rate,
                   gate_pass_rate=s.gate_pass_rate, strong_share=s.strong_share, error_rate=s.error_rate,
                   shadow_agreement=s.shadow_agreement, quality_retained=q[0] if q else None,
                   spend_ratio=s.spend_ratio, latency_p50_ms=s.latency(50), latency_p95_ms=s.latency(95),
                   prompt_tokens=Histogram.fit(s.prompt_tokens, bins), score=Histogram.fit(s.scores, bins))

    @classmethod
    def from_traces(cls, traces: Iterable[Mapping[str, Any] | Trace | TraceView], config: Config | None = None,
                    reference: str | None = None, bins: int | None = None, source: str = "traces") -> Baseline:
        """A baseline from a reference window of traces (store dicts, Trace objects or views). `config` gives
        prices (spend ratio), the reference model and the bin count (watch.psi_bins)."""
        bins = bins or (config.watch.psi_bins if config is not None else 10)
        return cls.from_stats(compute_stats(traces, config, reference), bins, source)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "source": self.source, "created": self.created, "n": self.n,
                "reference": self.reference, "values": {k: getattr(self, k) for k in VALUE_KEYS},
                "histograms": {k: asdict(h) for k in HISTOGRAM_KEYS if (h := getattr(self, k)) is not None}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Baseline:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a watch baseline: format is {d.get('format')!r}, expected {FORMAT!r}")
        values = d.get("values") or {}
        unknown = set(values) - set(VALUE_KEYS)
        if unknown:
            raise ValueError(f"unknown baseline values {sorted(unknown)}; known: {list(VALUE_KEYS)}")
        hists: dict[str, Histogram] = {}
        for k, h in (d.get("histograms") or {}).items():
            if k not in HISTOGRAM_KEYS:
                raise ValueError(f"unknown baseline histogram {k!r}; known: {list(HISTOGRAM_KEYS)}")
            edges, counts = [float(e) for e in h["edges"]], [int(c) for c in h["counts"]]
            if len(counts) != len(edges) + 1 or sorted(edges) != edges:
                raise ValueError(f"histogram {k!r}: needs ascending edges and len(counts) == len(edges) + 1")
            hists[k] = Histogram(edges, counts)
        b = cls(n=int(d.get("n") or 0), source=str(d.get("source") or ""),
                created=float(d.get("created") or time.time()), reference=d.get("reference"),
                prompt_tokens=hists.get("prompt_tokens"), score=hists.get("score"))
        for k in VALUE_KEYS:
            setattr(b, k, None if values.get(k) is None else float(values[k]))
        return b

    @classmethod
    def from_json(cls, text: str) -> Baseline:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        return cls.from_json(Path(path).read_text())


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


class Watch:
    """Compares a window of traces with a baseline under the configured bounds."""

    def __init__(self, config: Config | None = None, watch: WatchConfig | None = None) -> None:
        self.config = config
        self.wc = watch or (config.watch if config is not None else WatchConfig())

    def stats(self, traces: Iterable[Mapping[str, Any] | Trace | TraceView]) -> WindowStats:
        return compute_stats(traces, self.config, self.wc.reference)

    def check(self, traces: Iterable[Mapping[str, Any] | Trace | TraceView], baseline: Baseline) -> WatchReport:
        """Every metric of `traces` against `baseline`; drifted ones are the report's alerts."""
        s = self.stats(traces)
        b, wc = self.wc.bounds, self.wc
        need = wc.min_requests
        metrics = [
            self._rate("escalation_rate", s.escalation_rate, baseline.escalation_rate, b.escalation_rate,
                       "abs change", s.gated, need, "gated requests"),
            self._rate("gate_pass_rate", s.gate_pass_rate, baseline.gate_pass_rate, b.gate_pass_rate,
                       "abs change", s.verdicts, need, "gate verdicts"),
            self._rate("strong_share", s.strong_share, baseline.strong_share, b.strong_share,
                       "abs change", s.answered, need, "answered requests"),
            self._rate("error_rate", s.error_rate, baseline.error_rate, b.error_rate_increase,
                       "rise", s.routed, need, "routed requests"),
            self._rate("shadow_agreement", s.shadow_agreement, baseline.shadow_agreement, b.shadow_agreement_drop,
                       "drop", s.pairs, wc.min_shadow_pairs, "shadow pairs"),
            self._quality(s, baseline),
            self._rate("spend_ratio", s.spend_ratio, baseline.spend_ratio, b.spend_ratio_increase,
                       "rise", s.answered, need, "answered requests"),
            self._rate("latency_p95_ms", s.latency(95), baseline.latency_p95_ms, b.latency_p95_ratio,
                       "ratio", s.answered, need, "answered requests"),
            self._psi("psi_prompt_tokens", s.prompt_tokens, baseline.prompt_tokens),
            self._psi("psi_score", s.scores, baseline.score),
        ]
        spend = {"serving": s.spend_usd, "always_reference_estimate": s.counterfactual_usd,
                 "shadow": s.shadow_spend_usd}
        return WatchReport(metrics=metrics, window_n=s.n, window_start=s.start, window_end=s.end,
                           baseline_source=baseline.source, baseline_n=baseline.n, router=wc.router, spend=spend)

    @staticmethod
    def _rate(name: str, value: float | None, base: float | None, bound: float | None, rule: str, n: int,
              need: int, unit: str) -> Metric:
        m = Metric(name, value, base, bound, rule, OK, n)
        if bound is None:
            m.status = OFF
        elif value is None or n < need:
            m.status = INSUFFICIENT
        elif base is None:
            m.status = NO_BASELINE
        else:
            drifted = {"abs change": abs(value - base) > bound, "rise": value - base > bound,
                       "drop": base - value > bound,
                       "ratio": base > 0 and value / base > bound}[rule]
            m.status = DRIFT if drifted else OK
        shown = {"abs change": f"±{_fmt(bound)}", "rise": f"+{_fmt(bound)}", "drop": f"-{_fmt(bound)}",
                 "ratio": f"x{_fmt(bound)}"}[rule]
        m.message = (f"{name} {_fmt(value)} vs baseline {_fmt(base)} (bound {shown}) over {n} {unit}"
                     + ("" if m.status in (OK, DRIFT) else f": {m.status}"))
        return m

    def _quality(self, s: WindowStats, baseline: Baseline) -> Metric:
        wc = self.wc
        q = s.quality_retained(wc.confidence)
        m = Metric("quality_retained", q[0] if q else None, baseline.quality_retained, wc.quality_floor,
                   "floor", OK, s.pairs, lower=q[1] if q else None, upper=q[2] if q else None)
        if wc.quality_floor is None:
            m.status = OFF
        elif q is None or s.pairs < wc.min_shadow_pairs:
            m.status = INSUFFICIENT
        elif q[1] < wc.quality_floor:
            m.status = DRIFT
        pct = round(wc.confidence * 100, 2)
        m.message = (f"quality_retained {_fmt(m.value)} ({pct:g}% interval {_fmt(m.lower)}..{_fmt(m.upper)}) "
                     f"vs floor {_fmt(wc.quality_floor)} over {s.pairs} shadow pairs"
                     + (f", a lower bound ({s.estimate.line()})" if s.quality_lower_bound else "")
                     + ("" if m.status in (OK, DRIFT) else f": {m.status}"))
        return m

    def _psi(self, name: str, values: np.ndarray, hist: Histogram | None) -> Metric:
        bound = self.wc.bounds.psi
        m = Metric(name, None, 0.0, bound, "psi", OK, int(values.size))
        if bound is None:
            m.status = OFF
        elif hist is None or hist.n == 0:
            m.status = NO_BASELINE
        elif values.size < self.wc.min_requests or hist.n < self.wc.min_requests:
            m.status = INSUFFICIENT
        noise = None
        if hist is not None and hist.n > 0 and values.size:
            m.value = psi(hist.counts, hist.count(values))
            noise = psi_noise(len(hist.counts), hist.n, int(values.size))
            if bound is not None:
                # Small samples alone pass a fixed bound often (measured: benchmarks/psi_bounds.py).
                m.bound = psi_bound(bound, hist.counts, int(values.size), 1 - self.wc.psi_false_alarm)
            if m.status == OK and m.value > (m.bound or float("inf")):
                m.status = DRIFT
        m.message = (f"{name} {_fmt(m.value)} (bound {_fmt(m.bound)}; 0.1 moderate, 0.25 significant; "
                     f"sampling noise ~{_fmt(noise)}) over {values.size} requests"
                     + ("" if m.status in (OK, DRIFT) else f": {m.status}"))
        return m
