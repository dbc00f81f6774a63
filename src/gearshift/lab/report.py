"""`gearshift lab report`: one self-contained HTML file (plots embedded as data URIs) plus the PNGs.

What it shows, for a weak/strong pair of an outcomes table (benchmark or traces):
- a summary table per router: cost, savings and quality retained against always-strongest,
  quality, strong-call share, APGR, CPT(50%), CPT(80%), each with a bootstrap interval;
- quality-vs-cost and PGR-vs-strong-share curves of each router against random (expected),
  the oracle and the single-model hull (RouterBench's zero router: the NDCH of model points);
- the savings at chosen quality levels: the cheapest operating point of each router that keeps
  x% of always-strongest quality (in-sample: `gearshift lab check` gives held-out figures);
- for more than two models, every model's point and the AIQ of each router (RouterBench);
- for cascades, accepted-at-tier-1 against escalated requests (see CascadeRecords).

Everything is computed by `build_report` (numbers, no drawing) and drawn by `write_report`
(matplotlib with the Agg backend). The same bootstrap resamples serve every router, so intervals
of different routers are paired.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gearshift.lab import metrics
from gearshift.lab.bootstrap import Estimate, estimate, resample_matrix
from gearshift.lab.evaluate import Row, complete, default_pair, evaluate_pair
from gearshift.lab.replay import Decisions, ScoreOrder, replay, router_scores
from gearshift.outcomes.table import Outcomes
from gearshift.request import ChatRequest
from gearshift.routers.base import Router, ScoringRouter
from gearshift.routers.random import RandomOptions, RandomRouter

QUALITY_LEVELS = (0.90, 0.95, 0.99)
Progress = Callable[[str, int, int], None]  # (stage, done, total)

# Share grid on which the PGR bands are read off each resampled curve.
_BAND_GRID = np.linspace(0.0, 1.0, 101)


# --- the cheapest point of a curve reaching a quality -------------------------------------------


def cheapest_reaching(share: np.ndarray, quality: np.ndarray, cost: np.ndarray,
                      target: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest point of a piecewise-linear curve whose quality is at least `target`.

    share, quality, cost: (..., k) the curve's points in order (linear in between: a router gets
    any point of a segment by randomising between its two thresholds). target: a scalar or one
    per curve (...,). Returns (cost, share) at that point, NaN where no point reaches the target.
    Quality need not rise along the curve, nor cost: each segment is solved on its own.
    """
    q, c, s = (np.asarray(a, dtype=float) for a in (quality, cost, share))
    if q.shape[-1] == 1:  # one point: a zero-length segment
        q, c, s = (np.concatenate([a, a], axis=-1) for a in (q, c, s))
    t_q = np.asarray(target, dtype=float)[..., None] - 1e-12  # float noise must not miss a point exactly at the target
    if (np.diff(c, axis=-1) >= 0).all():
        return _first_reaching(s, q, c, t_q)
    return _segments_reaching(s, q, c, t_q)


def _segments_reaching(s: np.ndarray, q: np.ndarray, c: np.ndarray, t_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cheapest_reaching in general: the cheapest feasible end of every segment, then the least."""
    qa, qb, ca, cb, sa, sb = q[..., :-1], q[..., 1:], c[..., :-1], c[..., 1:], s[..., :-1], s[..., 1:]
    dq = qb - qa
    with np.errstate(invalid="ignore", divide="ignore"):
        cross = (t_q - qa) / dq
    flat_ok = qa >= t_q
    lo = np.where(dq > 0, cross, np.where(dq < 0, 0.0, np.where(flat_ok, 0.0, np.inf)))
    hi = np.where(dq < 0, cross, np.where(dq > 0, 1.0, np.where(flat_ok, 1.0, -np.inf)))
    lo, hi = np.maximum(lo, 0.0), np.minimum(hi, 1.0)
    feasible = lo <= hi
    t = np.where(feasible, np.where(cb >= ca, lo, hi), 0.0)  # cost is linear on a segment: its cheaper feasible end
    seg_cost = np.where(feasible, ca + t * (cb - ca), np.inf)
    seg_share = sa + t * (sb - sa)
    i = np.argmin(seg_cost, axis=-1)[..., None]
    best_cost = np.take_along_axis(seg_cost, i, -1)[..., 0]
    best_share = np.take_along_axis(np.where(feasible, seg_share, np.nan), i, -1)[..., 0]
    reached = np.isfinite(best_cost)
    return np.where(reached, best_cost, np.nan), np.where(reached, best_share, np.nan)


def _first_reaching(s: np.ndarray, q: np.ndarray, c: np.ndarray, t_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cheapest_reaching when cost never falls along the curve (the usual case: the strong model
    costs more on every prompt): the answer is where the curve first reaches the target."""
    above = q >= t_q  # (..., k) after broadcasting
    reached = above.any(axis=-1)
    i = np.argmax(above, axis=-1)
    prev = np.maximum(i - 1, 0)
    shape = above.shape

    def at(a: np.ndarray, j: np.ndarray) -> np.ndarray:
        return np.take_along_axis(np.broadcast_to(a, shape), j[..., None], -1)[..., 0]

    q1, q0 = at(q, i), at(q, prev)
    tq = np.broadcast_to(t_q, shape[:-1] + (1,))[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(i > 0, np.clip((tq - q0) / (q1 - q0), 0.0, 1.0), 1.0)
    c0, c1, s0, s1 = at(c, prev), at(c, i), at(s, prev), at(s, i)
    cost, share = c0 + frac * (c1 - c0), s0 + frac * (s1 - s0)
    return np.where(reached, cost, np.nan), np.where(reached, share, np.nan)


# --- cascades -------------------------------------------------------------------------------------


@dataclass
class CascadeRecords:
    """Per-request facts of a cascade, from traces or from a cascade replay.

    escalated: (n,) bool, the answer came from a later tier. cost: (n,) USD of every call the
    request made, gates and judges included. latency: (n,) seconds end to end, or None.
    gate_cost: (n,) USD of that spent on gates and judges, or None. quality: (n,) of the accepted
    answer, or None.

    The cascade replay hook: if `gearshift.lab.cascade` defines
    `cascade_records(router, outcomes, *, columns=None)` returning an object with these attributes
    (escalated and cost required, the others optional), the report uses it for routers of kind
    `cascade`; see `cascade_records_from_replay`.
    """

    escalated: np.ndarray
    cost: np.ndarray
    latency: np.ndarray | None = None
    gate_cost: np.ndarray | None = None
    quality: np.ndarray | None = None
    label: str = ""
    source: str = ""


@dataclass
class GroupStats:
    """One group of cascade requests (accepted at tier 1, or escalated)."""

    count: int
    latency_p50: float | None  # seconds
    latency_p95: float | None
    spend: float  # USD, gates included
    gate_spend: float | None


@dataclass
class CascadeSummary:
    label: str
    source: str
    requests: int
    escalation_rate: Estimate
    tier1: GroupStats
    escalated: GroupStats
    spend: float  # total USD, gates included
    gate_spend: float | None
    spend_per_request: Estimate
    quality: Estimate | None = None
    # (tier-1, escalated) latencies in seconds, for the plot.
    latencies: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)


def _pct(x: np.ndarray | None, mask: np.ndarray, q: float) -> float | None:
    if x is None or not mask.any():
        return None
    v = np.asarray(x, float)[mask]
    v = v[~np.isnan(v)]
    return float(np.percentile(v, q)) if len(v) else None


def summarise_cascade(rec: CascadeRecords, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> CascadeSummary:
    """Tier-1 vs escalated split: counts, latency p50/p95, spend including gates, escalation rate."""
    esc = np.asarray(rec.escalated, bool)
    cost = np.asarray(rec.cost, float)
    n = len(esc)
    if n == 0:
        raise ValueError("no cascade requests to summarise")
    gate = None if rec.gate_cost is None else np.asarray(rec.gate_cost, float)
    cols = [esc.astype(float), cost] + ([] if rec.quality is None else [np.asarray(rec.quality, float)])
    table = np.stack(cols, axis=1)
    samples = np.concatenate([w.astype(float) @ table / n for w in _counts_chunks(n, n_boot, seed)])
    full = table.mean(axis=0)

    def group(mask: np.ndarray) -> GroupStats:
        return GroupStats(count=int(mask.sum()), latency_p50=_pct(rec.latency, mask, 50),
                          latency_p95=_pct(rec.latency, mask, 95), spend=float(cost[mask].sum()),
                          gate_spend=None if gate is None else float(gate[mask].sum()))

    return CascadeSummary(
        label=rec.label, source=rec.source, requests=n,
        escalation_rate=estimate(float(full[0]), samples[:, 0], alpha),
        tier1=group(~esc), escalated=group(esc), spend=float(cost.sum()),
        gate_spend=None if gate is None else float(gate.sum()),
        spend_per_request=estimate(float(full[1]), samples[:, 1], alpha),
        quality=None if rec.quality is None else estimate(float(full[2]), samples[:, 2], alpha),
        latencies=None if rec.latency is None else (np.asarray(rec.latency, float)[~esc], np.asarray(rec.latency, float)[esc]))


def _counts_chunks(n: int, n_boot: int, seed: int) -> Iterable[np.ndarray]:
    from gearshift.lab.bootstrap import resample_counts

    return resample_counts(n, n_boot, seed)


_SERVING_ROLES = ("primary", "escalation", "fallback", "gate", "judge")


def cascade_records_from_traces(traces: Iterable[Mapping[str, Any]], router: str | None = None) -> CascadeRecords | None:
    """Cascade requests of stored traces (dicts as TraceStore.traces() yields them), or None.

    A trace is a cascade request when it escalated or a gate judged its answer (the same rule as
    `gearshift traces`); shadow work is not part of the request: calls from the first `shadow`
    call on, and `shadow_*` verdicts, are left out. Spend counts every serving call, gates and
    judges included. router: only traces of that router (or A/B arm).
    """
    esc, cost, lat, gate = [], [], [], []
    for t in traces:
        if t.get("status", 200) != 200 or not t.get("final_model"):
            continue
        if router is not None and router not in (t.get("router"), t.get("arm")):
            continue
        calls = []
        for c in t.get("calls") or []:
            if c.get("role") == "shadow":
                break
            calls.append(c)
        verdicts = [v for v in t.get("verdicts") or [] if not str(v.get("gate", "")).startswith("shadow_")]
        escalated = any(c.get("role") == "escalation" for c in calls)
        gated = any(c.get("role") in ("gate", "judge") for c in calls) or bool(verdicts)
        if not (escalated or gated):
            continue
        esc.append(escalated)
        cost.append(sum(float(c.get("cost_usd") or 0.0) for c in calls if c.get("role") in _SERVING_ROLES))
        gate.append(sum(float(c.get("cost_usd") or 0.0) for c in calls if c.get("role") in ("gate", "judge")))
        lat.append(float(t.get("latency_ms") or 0.0) / 1000.0)
    if not esc:
        return None
    return CascadeRecords(escalated=np.array(esc), cost=np.array(cost), latency=np.array(lat),
                          gate_cost=np.array(gate), label=router or "all cascade traffic", source="traces")


def cascade_records_from_replay(router: Router, outcomes: Outcomes,
                                columns: Mapping[str, str] | None = None) -> CascadeRecords | None:
    """A cascade router replayed over outcomes by `gearshift.lab.cascade.cascade_records`, if that
    module and function exist (None otherwise: the report then says the replay is not available)."""
    try:
        from gearshift.lab import replay as cascade_lab
    except ImportError:
        return None
    fn = getattr(cascade_lab, "cascade_records", None)
    if fn is None:
        return None
    res = fn(router, outcomes, columns=columns)

    def arr(name: str, dtype: type) -> np.ndarray | None:
        v = getattr(res, name, None)
        return None if v is None else np.asarray(v, dtype=dtype)

    escalated, cost = arr("escalated", bool), arr("cost", float)
    if escalated is None or cost is None:
        raise TypeError("gearshift.lab.cascade.cascade_records must return per-request `escalated` and `cost`")
    return CascadeRecords(escalated=escalated, cost=cost, latency=arr("latency", float),
                          gate_cost=arr("gate_cost", float), quality=arr("quality", float),
                          label=router.name, source="replay")


# --- the report's numbers ---------------------------------------------------------------------------


@dataclass
class LevelResult:
    """The cheapest way a router keeps `level` of always-strongest quality, or None if it cannot."""

    router: str
    level: float
    savings: Estimate | None
    strong_share: Estimate | None
    reached: float  # share of resamples in which the level was reached


@dataclass
class Band:
    """A router's PGR curve with its pointwise bootstrap band on a share grid."""

    share: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass
class PointRouter:
    """A router that chose among more than the pair's two models: one (cost, quality) point."""

    name: str
    cost: Estimate
    quality: Estimate
    savings: Estimate
    quality_retained: Estimate


@dataclass
class Report:
    """Everything the report shows, computed; `write_report` draws and writes it."""

    source: str
    n: int
    n_dropped: int
    weak: str
    strong: str
    models: list[str]
    cost_estimated: bool
    alpha: float
    n_boot: int
    levels: tuple[float, ...]
    rows: list[Row]
    ratios: dict[str, dict[str, Estimate]]
    level_results: list[LevelResult]
    bands: dict[str, Band]
    model_cost: np.ndarray
    model_quality: np.ndarray
    hull_cost: np.ndarray
    hull_quality: np.ndarray
    aiq: dict[str, float] = field(default_factory=dict)
    aiq_range: tuple[float, float] | None = None
    oracle_point: tuple[float, float] | None = None
    points: list[PointRouter] = field(default_factory=list)
    cascades: list[CascadeSummary] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    created: str = ""

    @property
    def multi_model(self) -> bool:
        return len(self.models) > 2

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row {name!r}; rows: {[r.name for r in self.rows]}")

    def display_name(self, row: Row) -> str:
        if row.name == f"always {self.weak}":
            return f"always weak ({self.weak})"
        if row.name == f"always {self.strong}":
            return f"always strong ({self.strong})"
        return row.name


class _Scored(ScoringRouter):
    """A scoring router whose scores of this report's prompts are already computed: evaluate_pair
    then sweeps them without scoring every prompt a second time."""

    kind = "scored"

    def __init__(self, router: ScoringRouter, scores: np.ndarray, weak: str, strong: str) -> None:
        super().__init__(router.name, None)
        self.weak, self.strong, self.threshold = weak, strong, float(router.threshold)
        self._scores = scores

    def score(self, request: ChatRequest) -> float:
        raise NotImplementedError("a precomputed router scores only the report's prompts, in batch")

    def scores(self, requests: Sequence[ChatRequest]) -> np.ndarray:
        if len(requests) != len(self._scores):
            raise ValueError(f"{len(self._scores)} precomputed scores for {len(requests)} requests")
        return self._scores


def _ratio_estimates(counts: np.ndarray, qr: np.ndarray, cr: np.ndarray, qs: np.ndarray, cs: np.ndarray,
                     alpha: float) -> dict[str, Estimate]:
    """Savings (1 - cost/always-strong cost) and quality retained (quality/always-strong quality), paired."""
    table = np.stack([qr, cr, qs, cs], axis=1)
    m = counts.astype(np.float32) @ table.astype(np.float32) / len(qr)
    full = table.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sav, ret = 1 - m[:, 1] / m[:, 3], m[:, 0] / m[:, 2]
        return {"savings": estimate(float(1 - full[1] / full[3]), sav, alpha),
                "quality_retained": estimate(float(full[0] / full[2]), ret, alpha)}


def _band(share: np.ndarray, pgr: np.ndarray) -> np.ndarray:
    """PGR of each resampled curve read off at the grid shares, (B, grid)."""
    out = np.empty((share.shape[0], len(_BAND_GRID)))
    for b in range(share.shape[0]):
        out[b] = np.interp(_BAND_GRID, share[b], pgr[b])
    return out


def _swept_levels(scores: np.ndarray, o: Outcomes, weak: str, strong: str, counts: np.ndarray,
                  levels: Sequence[float], alpha: float, name: str, step: int,
                  progress: Progress | None) -> tuple[list[LevelResult], Band]:
    order = ScoreOrder.from_scores(scores)
    full = order.curve(o, weak, strong)
    sav_s, share_s, band_s = [], [], []
    done = 0
    for i in range(0, counts.shape[0], step):
        c = order.curve(o, weak, strong, weights=counts[i:i + step])
        targets = np.stack([lv * c.quality[:, -1] for lv in levels], axis=1)  # (B, L)
        cost, share = cheapest_reaching(c.strong_share[:, None, :], c.quality[:, None, :], c.cost[:, None, :], targets)
        with np.errstate(invalid="ignore", divide="ignore"):
            sav_s.append(1 - cost / c.cost[:, -1:])
        share_s.append(share)
        band_s.append(_band(c.strong_share, c.pgr))
        done += c.quality.shape[0]
        if progress:
            progress(f"levels: {name}", done, counts.shape[0])
    sav, shr, band = np.concatenate(sav_s), np.concatenate(share_s), np.concatenate(band_s)
    out = []
    for j, lv in enumerate(levels):
        fc, fs = cheapest_reaching(full.strong_share, full.quality, full.cost, lv * full.quality[-1])
        reached = float(np.mean(~np.isnan(sav[:, j])))
        if np.isnan(fc):
            out.append(LevelResult(name, lv, None, None, reached))
            continue
        out.append(LevelResult(name, lv, estimate(float(1 - fc / full.cost[-1]), sav[:, j], alpha),
                               estimate(float(fs), shr[:, j], alpha), reached))
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanquantile(band, [alpha / 2, 1 - alpha / 2], axis=0)
    return out, Band(_BAND_GRID.copy(), lo, hi)


def _model_means(counts: np.ndarray | None, values: np.ndarray) -> np.ndarray:
    """NaN-aware per-model means, one row per resample (or one row for counts None)."""
    v = np.asarray(values, float)
    has = (~np.isnan(v)).astype(float)
    w = np.ones((1, len(v))) if counts is None else counts.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ np.nan_to_num(v)) / (w @ has)


def _hull_levels(o: Outcomes, strong: str, counts: np.ndarray, levels: Sequence[float],
                 alpha: float) -> list[LevelResult]:
    """The single-model hull (zero router): the cheapest random mix of models reaching each level."""
    s = o.index(strong)

    def savings_at(cm: np.ndarray, qm: np.ndarray) -> np.ndarray:
        hc, hq = metrics.ndch(cm, qm)
        cost, _ = cheapest_reaching(hc, hq, hc, np.asarray(levels) * qm[s])
        return np.asarray(1 - cost / cm[s])

    full = savings_at(_model_means(None, o.cost)[0], _model_means(None, o.quality)[0])
    cost_b, q_b = _model_means(counts, o.cost), _model_means(counts, o.quality)
    samples = np.full((counts.shape[0], len(levels)), np.nan)
    for b in range(counts.shape[0]):  # a hull of a handful of points per resample: cheap
        if not (np.isnan(cost_b[b]).any() or np.isnan(q_b[b]).any()):
            samples[b] = savings_at(cost_b[b], q_b[b])
    out = []
    for j, lv in enumerate(levels):
        reached = float(np.mean(~np.isnan(samples[:, j])))
        sav = None if np.isnan(full[j]) else estimate(float(full[j]), samples[:, j], alpha)
        out.append(LevelResult("single-model hull", lv, sav, None, reached))
    return out


def _pair_of(router: ScoringRouter, columns: Mapping[str, str]) -> tuple[str, str]:
    return columns.get(router.weak, router.weak), columns.get(router.strong, router.strong)


def build_report(outcomes: Outcomes, weak: str | None = None, strong: str | None = None,
                 routers: Sequence[Router] = (), *, columns: Mapping[str, str] | None = None,
                 levels: Sequence[float] = QUALITY_LEVELS, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 random_seed: int = 0, cascades: Sequence[CascadeRecords] = (),
                 progress: Progress | None = None) -> Report:
    """Compute every figure of the report (see the module doc). Nothing is drawn here.

    routers: scoring routers on the pair are swept; other routers are replayed (those choosing
    models outside the pair become points; kind `cascade` goes through the cascade replay hook).
    cascades: cascade records from traces (see cascade_records_from_traces).
    """
    t0 = time.perf_counter()
    cols = dict(columns or {})
    if weak is None or strong is None:
        dw, ds = default_pair(outcomes)
        weak, strong = weak or dw, strong or ds
    o = complete(outcomes, [weak, strong])
    if len(o) == 0:
        raise ValueError(f"no prompt of {outcomes.name!r} has a quality for both {weak!r} and {strong!r}")
    notes: list[str] = []
    w, s = o.index(weak), o.index(strong)
    qw, qs = np.asarray(o.quality[:, w], float), np.asarray(o.quality[:, s], float)
    cw, cs = np.asarray(o.cost[:, w], float), np.asarray(o.cost[:, s], float)
    if np.isnan(cw).any() or np.isnan(cs).any():
        raise ValueError(f"{outcomes.name!r}: some prompts have no cost for {weak!r} or {strong!r}")

    pair_routers: list[Router] = []
    to_strong: dict[str, np.ndarray] = {}
    swept_scores: dict[str, np.ndarray] = {}
    points: list[tuple[str, Decisions]] = []
    cascade_recs = list(cascades)
    for router in routers:
        if getattr(router, "kind", "") == "cascade":
            rec = cascade_records_from_replay(router, o, cols)
            if rec is None:
                notes.append(f"{router.name}: cascade replay is not available (gearshift.lab.cascade.cascade_records "
                             f"is missing); its tier-1/escalated split needs traces or that module")
            else:
                cascade_recs.append(rec)
                if rec.quality is not None:
                    # Replayed on these prompts: also one operating point beside the other routers, its
                    # cost counting every tier and gate call (the tier-1/escalated split has its own section).
                    points.append((router.name, Decisions(list(o.models), np.full(len(o), -1),
                                                          np.asarray(rec.quality, float), np.asarray(rec.cost, float),
                                                          router.name)))
            continue
        if isinstance(router, ScoringRouter) and getattr(router, "weak", None) and getattr(router, "strong", None):
            pw, ps = _pair_of(router, cols)
            if (pw, ps) != (weak, strong):
                raise ValueError(f"router {router.name!r} routes between {pw!r} and {ps!r}; this report's pair is "
                                 f"{weak!r} (weak) and {strong!r} (strong)")
            if progress:
                progress(f"score {router.name}", 0, 1)
            sc = router_scores(router, o)
            if router.threshold is None:  # a baseline with no threshold of its own: the longer half goes strong
                router.threshold = float(np.median(sc))
            swept_scores[router.name] = sc
            to_strong[router.name] = sc >= router.threshold
            pair_routers.append(_Scored(router, sc, weak, strong))
            if progress:
                progress(f"score {router.name}", 1, 1)
            continue
        dec = replay(router, o, columns=cols)
        if np.isin(dec.choice, [w, s]).all():
            to_strong[router.name] = dec.choice == s
            pair_routers.append(router)
        else:
            points.append((router.name, dec))

    rows = evaluate_pair(o, weak, strong, pair_routers, columns=cols, n_boot=n_boot, seed=seed, alpha=alpha,
                         random_seed=random_seed, progress=progress)
    counts = resample_matrix(len(o), n_boot, seed)  # the very resamples evaluate_pair used: paired intervals
    rnd = RandomRouter("random", RandomOptions(weights={weak: 1.0, strong: 1.0}, seed=random_seed))
    swept_scores = {"random": router_scores(rnd, o), "oracle": qs - qw, **swept_scores}
    to_strong.update({f"always {weak}": np.zeros(len(o), bool), f"always {strong}": np.ones(len(o), bool),
                      "random": swept_scores["random"] >= rnd.threshold, "oracle": qs > qw})

    ratios: dict[str, dict[str, Estimate]] = {}
    for r in rows:
        ts = to_strong[r.name]
        ratios[r.name] = _ratio_estimates(counts, np.where(ts, qs, qw), np.where(ts, cs, cw), qs, cs, alpha)

    step = max(1, 2_000_000 // max(len(o), 1))
    level_results: list[LevelResult] = []
    bands: dict[str, Band] = {}
    for name, sc in swept_scores.items():
        swept, band = _swept_levels(sc, o, weak, strong, counts, levels, alpha, name, step, progress)
        level_results += swept
        bands[name] = band
    level_results += _hull_levels(o, strong, counts, levels, alpha)
    for r in rows:
        if r.curve is None and r.kind != "fixed":  # replayed pair routers: one operating point
            est = ratios[r.name]
            for level in levels:
                ok = est["quality_retained"].value >= level - 1e-12
                level_results.append(LevelResult(r.name, level, est["savings"] if ok else None,
                                                 r.strong_share if ok else None, float(ok)))

    mc, mq = (a[0] for a in (_model_means(None, o.cost), _model_means(None, o.quality)))
    hc, hq = metrics.ndch(mc, mq)
    report = Report(source=outcomes.name, n=len(o), n_dropped=len(outcomes) - len(o), weak=weak, strong=strong,
                    models=list(o.models), cost_estimated=o.cost_estimated, alpha=alpha, n_boot=n_boot,
                    levels=tuple(levels), rows=rows, ratios=ratios, level_results=level_results, bands=bands,
                    model_cost=mc, model_quality=mq, hull_cost=hc, hull_quality=hq, notes=notes)

    for name, dec in points:
        ts_q, ts_c = np.asarray(dec.quality, float), np.asarray(dec.cost, float)
        est = _ratio_estimates(counts, ts_q, ts_c, qs, cs, alpha)
        m = counts.astype(float) @ np.stack([ts_q, ts_c], axis=1) / len(o)
        report.points.append(PointRouter(name, estimate(float(ts_c.mean()), m[:, 1], alpha),
                                         estimate(float(ts_q.mean()), m[:, 0], alpha), est["savings"],
                                         est["quality_retained"]))
        for level in levels:  # one operating point: it keeps a level or it does not
            ok = est["quality_retained"].value >= level - 1e-12
            report.level_results.append(LevelResult(name, level, est["savings"] if ok else None, None, float(ok)))
    if report.multi_model:
        lo, hi = float(np.nanmin(mc)), float(np.nanmax(mc))
        report.aiq_range = (lo, hi)
        report.aiq["single-model hull (zero router)"] = metrics.aiq(mc, mq, (lo, hi))
        for r in rows:
            if r.curve is not None:
                report.aiq[r.name] = metrics.aiq(r.curve.cost, r.curve.quality, (lo, hi))
        for p in report.points:
            report.aiq[p.name] = metrics.aiq([p.cost.value], [p.quality.value], (lo, hi))
        od = metrics.oracle_decisions(o)
        ok = ~np.isnan(od.quality) & ~np.isnan(od.cost)
        report.oracle_point = (float(od.cost[ok].mean()), float(od.quality[ok].mean()))
        report.aiq[f"oracle (all {len(o.models)} models)"] = metrics.aiq([report.oracle_point[0]],
                                                                          [report.oracle_point[1]], (lo, hi))
    for rec in cascade_recs:
        report.cascades.append(summarise_cascade(rec, n_boot=n_boot, seed=seed, alpha=alpha))
    if report.n_dropped:
        notes.append(f"{report.n_dropped} prompts without a quality for {weak} or {strong} were left out")
    if o.cost_estimated:
        notes.append("costs are estimates (tokens from characters at published prices), not billed amounts")
    report.seconds = time.perf_counter() - t0
    report.created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return report


def cascade_report(cascades: Sequence[CascadeRecords], source: str, *, n_boot: int = 1000, seed: int = 0,
                   alpha: float = 0.05, note: str = "") -> Report:
    """A report of cascade splits alone: for traces that carry escalations but no graded pairs."""
    t0 = time.perf_counter()
    if not cascades:
        raise ValueError("no cascade records to report")
    empty = np.array([])
    report = Report(source=source, n=0, n_dropped=0, weak="", strong="", models=[], cost_estimated=False,
                    alpha=alpha, n_boot=n_boot, levels=(), rows=[], ratios={}, level_results=[], bands={},
                    model_cost=empty, model_quality=empty, hull_cost=empty, hull_quality=empty,
                    notes=[note] if note else [])
    report.cascades = [summarise_cascade(rec, n_boot=n_boot, seed=seed, alpha=alpha) for rec in cascades]
    report.seconds = time.perf_counter() - t0
    report.created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return report


# --- drawing -------------------------------------------------------------------------------------------

_FIXED_STYLE = {"random": ("#7f7f7f", "-"), "oracle": ("#000000", ":")}
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22")


def _colors(report: Report) -> dict[str, str]:
    names = [r.name for r in report.rows if r.kind in ("scoring", "replay") and r.name not in _FIXED_STYLE]
    names += [p.name for p in report.points] + [c.label for c in report.cascades]
    out = {k: v[0] for k, v in _FIXED_STYLE.items()}
    for i, n in enumerate(dict.fromkeys(names)):
        out[n] = _PALETTE[i % len(_PALETTE)]
    return out


def _per_1k(x: float | np.ndarray) -> Any:
    return np.asarray(x, float) * 1000


def plot_quality_cost(report: Report) -> Any:
    """Quality against cost per 1k requests: routers' curves, random, oracle, models and their hull."""
    if not report.rows:
        return None
    import matplotlib.pyplot as plt

    colors = _colors(report)
    fig, ax = plt.subplots(figsize=(7.6, 5.4), dpi=110)
    ax.plot(_per_1k(report.hull_cost), report.hull_quality, color="#8c564b", ls="--", lw=1.5,
            label="single-model hull (zero router)" + (" = random, expected" if not report.multi_model else ""))
    ax.scatter(_per_1k(report.model_cost), report.model_quality, color="#8c564b", s=22, zorder=3)
    for m, c, q in zip(report.models, report.model_cost, report.model_quality, strict=True):
        if report.multi_model or m in (report.weak, report.strong):
            ax.annotate(m.split("/")[-1], (float(c) * 1000, float(q)), fontsize=7, xytext=(4, -9),
                        textcoords="offset points", color="#5a3a2e")
    for r in report.rows:
        if r.curve is None:
            if r.kind == "replay":
                ax.scatter([r.cost.value * 1000], [r.quality.value], marker="D", s=40, color=colors[r.name],
                           zorder=4, label=f"{r.name} (its decisions)")
            continue
        color, ls = _FIXED_STYLE.get(r.name, (colors[r.name], "-"))
        ax.plot(_per_1k(r.curve.cost), r.curve.quality, color=color, ls=ls, lw=1.6, label=r.name)
        if r.kind == "scoring" and r.name != "random":
            ax.scatter([r.cost.value * 1000], [r.quality.value], color=color, s=30, zorder=4, edgecolor="white")
    for p in report.points:
        ax.scatter([p.cost.value * 1000], [p.quality.value], marker="D", s=40, color=colors[p.name], zorder=4,
                   label=f"{p.name} (its decisions)")
    if report.oracle_point:
        ax.scatter([report.oracle_point[0] * 1000], [report.oracle_point[1]], marker="*", s=120, color="black",
                   zorder=4, label=f"oracle, all {len(report.models)} models")
    strong_q = report.row(f"always {report.strong}").quality.value
    for lv in report.levels:
        ax.axhline(lv * strong_q, color="#bbbbbb", lw=0.8, ls=(0, (2, 3)))
        ax.annotate(f"{lv:.0%} of always-strong", (0.0, lv * strong_q), xycoords=("axes fraction", "data"), fontsize=7,
                    color="#888888", xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("cost, USD per 1,000 requests" + (" (estimated)" if report.cost_estimated else ""))
    ax.set_ylabel("quality (mean per request)")
    ax.set_title(f"{report.source}: quality against cost ({report.n:,} prompts)", fontsize=11)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_pgr_share(report: Report) -> Any:
    """PGR against the strong-call share, with each router's pointwise bootstrap band."""
    if not report.rows:
        return None
    import matplotlib.pyplot as plt

    colors = _colors(report)
    fig, ax = plt.subplots(figsize=(7.6, 5.4), dpi=110)
    ax.plot([0, 1], [0, 1], color="#8c564b", ls="--", lw=1.2, label="random, expected (and the model hull)")
    for r in report.rows:
        if r.curve is None:
            if r.kind == "replay":
                pgr = float(metrics.pgr(r.quality.value, report.rows[0].quality.value, report.rows[1].quality.value))
                ax.scatter([r.strong_share.value], [pgr], marker="D", s=40, color=colors[r.name], zorder=4, label=r.name)
            continue
        color, ls = _FIXED_STYLE.get(r.name, (colors[r.name], "-"))
        band = report.bands.get(r.name)
        if band is not None and r.name != "oracle":  # the oracle is a limit, not an estimate to hedge
            ax.fill_between(band.share, band.low, band.high, color=color, alpha=0.12, lw=0)
        apgr = f" (APGR {r.apgr.value:.3f})" if r.apgr is not None else ""
        ax.plot(r.curve.strong_share, r.curve.pgr, color=color, ls=ls, lw=1.6, label=r.name + apgr)
    for x in (0.5, 0.8):
        ax.axhline(x, color="#bbbbbb", lw=0.8, ls=(0, (2, 3)))
        ax.annotate(f"CPT({x:.0%})", (0.0, x), xycoords=("axes fraction", "data"), fontsize=7, color="#888888",
                    xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel(f"share of requests sent to the strong model ({report.strong})")
    ax.set_ylabel("PGR: performance gap recovered")
    ax.set_xlim(0, 1)
    top = max(1.05, *(float(np.nanmax(r.curve.pgr)) + 0.05 for r in report.rows if r.curve is not None))
    ax.set_ylim(min(-0.05, *(float(np.nanmin(r.curve.pgr)) - 0.05 for r in report.rows if r.curve is not None)), top)
    ax.set_title(f"{report.source}: PGR against strong-call share (shaded: {1 - report.alpha:.0%} bootstrap band)",
                 fontsize=11)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_levels(report: Report) -> Any:
    """Savings against always-strongest at each quality level, with intervals."""
    if not report.rows:
        return None
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colors = {**_colors(report), "single-model hull": "#8c564b"}
    names = list(dict.fromkeys(lr.router for lr in report.level_results))
    fig, ax = plt.subplots(figsize=(9, 4.6), dpi=110)
    width = 0.8 / max(len(names), 1)
    handles: list[Any] = []
    for i, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for j, lv in enumerate(report.levels):
            lr = next((x for x in report.level_results if x.router == name and x.level == lv), None)
            x = j + (i - (len(names) - 1) / 2) * width
            if lr is None or lr.savings is None:
                ax.annotate("not\nreached", (x, 0), ha="center", va="bottom", fontsize=6, color=colors.get(name, "#999999"),
                            xytext=(0, 2), textcoords="offset points")
                continue
            xs.append(x)
            ys.append(lr.savings.value * 100)
            lo.append(max(0.0, (lr.savings.value - lr.savings.low) * 100) if lr.savings.low == lr.savings.low else 0.0)
            hi.append(max(0.0, (lr.savings.high - lr.savings.value) * 100) if lr.savings.high == lr.savings.high else 0.0)
        style: dict[str, Any] = {"facecolor": colors.get(name, "#999999"), "hatch": "//" if name == "oracle" else None,
                 "edgecolor": "white" if name != "oracle" else "#555555"}
        if xs:
            ax.bar(xs, ys, width * 0.92, yerr=[lo, hi], capsize=2, error_kw={"lw": 0.8}, **style)
        handles.append(Patch(label=name + (" (upper limit)" if name == "oracle" else ""), **style))
    ests = [x.savings for x in report.level_results if x.savings is not None]
    top = max([10.0, *(100 * np.nanmax([e.value, e.high]) for e in ests)])
    bottom = min([0.0, *(100 * np.nanmin([e.value, e.low]) for e in ests)])
    ax.set_ylim(bottom, top * 1.3)  # room for the legend above the bars
    ax.set_xticks(range(len(report.levels)), [f"keep {lv:.0%} of always-strong quality" for lv in report.levels])
    ax.set_ylabel("savings vs always-strongest (%)")
    ax.set_title(f"{report.source}: savings at quality levels (cheapest operating point reaching each level, in-sample)",
                 fontsize=10)
    ax.grid(axis="y", alpha=0.25)
    ax.legend(handles=handles, fontsize=8, ncols=min(len(names), 4), loc="upper right")
    fig.tight_layout()
    return fig


def plot_cascades(report: Report) -> Any | None:
    """Latency of requests accepted at tier 1 against escalated ones, one panel per cascade."""
    with_latency = [(c, c.latencies) for c in report.cascades if c.latencies is not None]
    if not with_latency:
        return None
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(with_latency), figsize=(9, 3.6), dpi=110, squeeze=False)
    for ax, (c, (t1, esc)) in zip(axes[0], with_latency, strict=True):
        data = [v for v in (t1, esc) if len(v)]
        labels = [lb for lb, v in (("accepted at tier 1", t1), ("escalated", esc)) if len(v)]
        ax.boxplot(data, tick_labels=labels, whis=(5, 95), showfliers=False)
        ax.set_ylabel("latency (s)")
        ax.set_title(f"{c.label}: escalation {c.escalation_rate.value:.1%}", fontsize=10)
        ax.grid(axis="y", alpha=0.25)
    fig.tight_layout()
    return fig


# --- HTML -------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1240px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
p.meta{color:#555;margin-top:0} table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{padding:4px 9px;border-bottom:1px solid #e6e6e6;text-align:right;vertical-align:top}
th{background:#f4f4f4;font-weight:600} td:first-child,th:first-child{text-align:left}
td small{color:#888;white-space:nowrap} img{max-width:100%;border:1px solid #eee;margin:6px 0}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:10px} .pair img{width:100%;box-sizing:border-box}
ul.notes{color:#555;font-size:13px} .muted{color:#999}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _cell(e: Estimate | None, scale: float = 1.0, spec: str = ".3f", prefix: str = "", suffix: str = "") -> str:
    if e is None:
        return '<span class="muted">-</span>'
    v = e.value * scale
    if e.low != e.low:  # NaN interval: too few resamples had a value
        return f"{prefix}{v:{spec}}{suffix}"
    return (f"{prefix}{v:{spec}}{suffix}<br><small>{prefix}{e.low * scale:{spec}}{suffix} - "
            f"{e.high * scale:{spec}}{suffix}</small>")


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    h = "".join(f"<th>{_esc(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def summary_rows(report: Report) -> list[list[str]]:
    """The summary table's cells (HTML)."""
    out = []
    for r in report.rows:
        ratio = report.ratios[r.name]
        out.append([_esc(report.display_name(r)), _cell(r.cost, 1000, ".3f", "$"), _cell(ratio["savings"], 100, ".1f", suffix="%"),
                    _cell(r.quality), _cell(ratio["quality_retained"], 100, ".1f", suffix="%"),
                    _cell(r.strong_share, 100, ".1f", suffix="%"), _cell(r.apgr),
                    _cell(r.cpt50, 100, ".1f", suffix="%"), _cell(r.cpt80, 100, ".1f", suffix="%")])
    for p in report.points:
        out.append([_esc(p.name), _cell(p.cost, 1000, ".3f", "$"), _cell(p.savings, 100, ".1f", suffix="%"),
                    _cell(p.quality), _cell(p.quality_retained, 100, ".1f", suffix="%"), "-", "-", "-", "-"])
    return out


SUMMARY_HEAD = ("router", "$ per 1k requests", "savings vs always-strongest", "quality", "quality retained",
                "strong calls", "APGR", "CPT(50%)", "CPT(80%)")


def _cascade_section(report: Report, images: Mapping[str, bytes]) -> list[str]:
    parts = ["<h2 id=\"cascades\">Cascades: accepted at tier 1 against escalated</h2>"]
    if report.cascades:
        crows = []
        for c in report.cascades:
            for label, g in (("accepted at tier 1", c.tier1), ("escalated", c.escalated)):
                crows.append([_esc(f"{c.label} ({c.source})"), label, f"{g.count:,}",
                              "-" if g.latency_p50 is None else f"{g.latency_p50 * 1000:.0f} ms",
                              "-" if g.latency_p95 is None else f"{g.latency_p95 * 1000:.0f} ms",
                              f"${g.spend:.4f}", "-" if g.gate_spend is None else f"${g.gate_spend:.4f}"])
            crows.append([_esc(f"{c.label} ({c.source})"), "<b>all</b>", f"{c.requests:,}",
                          "escalation rate " + _cell(c.escalation_rate, 100, ".1f", suffix="%"), "",
                          f"<b>${c.spend:.4f}</b><br><small>per request {_cell(c.spend_per_request, 1, '.6f', '$')}</small>",
                          "-" if c.gate_spend is None else f"${c.gate_spend:.4f}"])
        parts.append(_table(["cascade", "group", "requests", "latency p50", "latency p95", "spend incl. gates",
                             "of which gates"], crows))
        if "cascades" in images:
            parts.append(_img(images["cascades"], "cascade latency"))
    else:
        parts.append("<p class=\"muted\">No cascade data: these outcomes carry no escalations. Traces of cascade routers "
                     "(<code>gearshift lab report --config FILE</code>) or a cascade replay "
                     "(<code>gearshift.lab.cascade.cascade_records</code>) fill this section.</p>")
    return parts


def _render_cascades_only(report: Report, images: Mapping[str, bytes], command: str) -> str:
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gearshift lab report: "
             f"{_esc(report.source)}</title><style>{_CSS}</style></head><body>",
             f"<h1>gearshift lab report: {_esc(report.source)}</h1>",
             f"<p class=\"meta\">No graded pairs of two models: only the cascade split is shown. Intervals: "
             f"{1 - report.alpha:.0%} bootstrap percentile intervals ({report.n_boot:,} resamples). Generated "
             f"{report.created} in {report.seconds:.1f} s.</p>"]
    parts += _cascade_section(report, images)
    if report.notes:
        parts.append("<h2 id=\"notes\">Notes</h2><ul class=\"notes\">"
                     + "".join(f"<li>{_esc(n)}</li>" for n in report.notes) + "</ul>")
    if command:
        parts.append(f"<p class=\"meta\">Command: <code>{_esc(command)}</code></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_html(report: Report, images: Mapping[str, bytes], command: str = "") -> str:
    """The report as one HTML document; `images` (name -> PNG bytes) are embedded as data URIs."""
    conf = f"{1 - report.alpha:.0%}"
    if not report.rows:
        return _render_cascades_only(report, images, command)
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gearshift lab report: "
             f"{_esc(report.source)}</title><style>{_CSS}</style></head><body>",
             f"<h1>gearshift lab report: {_esc(report.source)}</h1>",
             f"<p class=\"meta\">{report.n:,} prompts; weak <b>{_esc(report.weak)}</b>, strong <b>{_esc(report.strong)}</b>"
             f"{'; ' + str(len(report.models)) + ' models' if report.multi_model else ''}. Intervals: {conf} bootstrap "
             f"percentile intervals over prompts ({report.n_boot:,} resamples, the same for every router). "
             f"Generated {report.created} in {report.seconds:.1f} s.</p>",
             "<h2 id=\"summary\">Summary</h2>",
             "<p>Each router at its configured operating point (random: half the calls strong; oracle: strong exactly "
             "where the strong answer is better). Savings and quality retained are against always-strongest; APGR and "
             "CPT are over each router's whole threshold sweep (RouteLLM's definitions).</p>",
             _table(SUMMARY_HEAD, summary_rows(report))]
    curves = [_img(images[k], alt) for k, alt in (("quality_cost", "quality against cost"),
                                                   ("pgr_share", "PGR against strong-call share")) if k in images]
    if curves:
        parts += ["<h2 id=\"curves\">Cost-quality curves</h2>", "<div class=\"pair\">" + "".join(curves) + "</div>"]
    parts += ["<h2 id=\"levels\">Savings at quality levels</h2>",
              "<p>For each router, the cheapest operating point (thresholds mixed at random between two adjacent "
              "points) whose quality is at least the level times always-strongest quality. Chosen on the same prompts "
              "it is measured on, so it is optimistic; <code>gearshift lab check</code> calibrates on one half and "
              "reports the other.</p>"]
    names = list(dict.fromkeys(lr.router for lr in report.level_results))
    lrows = []
    for name in names:
        cells = [_esc(name)]
        for lv in report.levels:
            lr = next((x for x in report.level_results if x.router == name and x.level == lv), None)
            if lr is None or lr.savings is None:
                cells.append('<span class="muted">not reached</span>')
            else:
                share = f"<br><small>strong calls {lr.strong_share.value:.1%}</small>" if lr.strong_share else ""
                cells.append(_cell(lr.savings, 100, ".1f", suffix="%") + share)
        lrows.append(cells)
    parts.append(_table(["router", *(f"keep {lv:.0%}" for lv in report.levels)], lrows))
    if "levels" in images:
        parts.append(_img(images["levels"], "savings at quality levels"))
    if report.multi_model:
        parts += ["<h2 id=\"models\">All models (RouterBench)</h2>",
                  "<p>Always using one model; the single-model hull is the non-decreasing convex hull of these points "
                  "(randomly mixing models, no intelligence). AIQ: the mean of a router's hull over the cost range "
                  f"${report.aiq_range[0] * 1000:.3f} - ${report.aiq_range[1] * 1000:.3f} per 1k requests "
                  "(cheapest to dearest model).</p>" if report.aiq_range else "",
                  _table(["model", "$ per 1k requests", "quality"],
                         [[_esc(m), f"${c * 1000:.3f}", f"{q:.3f}"]
                          for m, c, q in sorted(zip(report.models, report.model_cost, report.model_quality, strict=True),
                                                key=lambda t: t[1])]),
                  _table(["router", "AIQ"], [[_esc(k), f"{v:.4f}"] for k, v in sorted(report.aiq.items(), key=lambda kv: -kv[1])])]
    parts += _cascade_section(report, images)
    notes = list(report.notes) + [
        "PGR = (q - q_weak) / (q_strong - q_weak); APGR = area under PGR over the strong-call share; CPT(x%) = least "
        "strong-call share reaching PGR x% (RouteLLM, arXiv 2406.18665). The oracle sends a prompt strong exactly "
        "when the strong answer is better: no router can do better at any share.",
        "The single-model hull and AIQ follow RouterBench (arXiv 2403.12031).",
    ]
    parts.append("<h2 id=\"notes\">Notes</h2><ul class=\"notes\">" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
    if command:
        parts.append(f"<p class=\"meta\">Command: <code>{_esc(command)}</code></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


PLOTS: tuple[tuple[str, Callable[[Report], Any]], ...] = (
    ("quality_cost", plot_quality_cost), ("pgr_share", plot_pgr_share), ("levels", plot_levels),
    ("cascades", plot_cascades),
)


def write_report(report: Report, out: str | Path, command: str = "", progress: Progress | None = None) -> list[Path]:
    """Draw the plots, write `out` (one self-contained HTML file) and the PNGs beside it
    (`<stem>-<plot>.png`). Returns the paths written, the HTML first."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display: draw to memory only
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    for i, (name, fn) in enumerate(PLOTS):
        if progress:
            progress("plots", i, len(PLOTS))
        fig = fn(report)
        if fig is not None:
            images[name] = _png(fig)
    if progress:
        progress("plots", len(PLOTS), len(PLOTS))
    paths = [out]
    out.write_text(render_html(report, images, command), encoding="utf-8")
    for name, png in images.items():
        p = out.with_name(f"{out.stem}-{name.replace('_', '-')}.png")
        p.write_bytes(png)
        paths.append(p)
    return paths


__all__ = [
    "QUALITY_LEVELS", "Band", "CascadeRecords", "CascadeSummary", "GroupStats", "LevelResult", "PointRouter", "Report",
    "build_report", "cascade_records_from_replay", "cascade_records_from_traces", "cheapest_reaching",
    "plot_cascades", "plot_levels", "plot_pgr_share", "plot_quality_cost", "render_html", "summarise_cascade",
    "write_report",
]
