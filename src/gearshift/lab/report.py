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
of different routers are paired. This module assembles the report; the parts live beside it:
levels.py (cheapest point reaching a quality), tiers.py (cascade split), plots.py (figures), page.py (HTML).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gearshift.lab import metrics
from gearshift.lab.baselines import RANDOM_DRAWS
from gearshift.lab.bootstrap import Estimate, estimate, resample_matrix
from gearshift.lab.evaluate import Row, complete, default_pair, evaluate_pair
from gearshift.lab.levels import (
    Band,
    LevelResult,
    Progress,
    cheapest_reaching,
    hull_levels,
    model_means,
    swept_levels,
)
from gearshift.lab.page import render_html
from gearshift.lab.plots import PLOTS, plot_cascades, plot_levels, plot_pgr_share, plot_quality_cost, png
from gearshift.lab.replay import Decisions, replay, router_scores
from gearshift.lab.tiers import (
    CascadeRecords,
    CascadeSummary,
    GroupStats,
    cascade_records_from_traces,
    summarise_cascade,
)
from gearshift.outcomes.table import Outcomes
from gearshift.request import ChatRequest
from gearshift.routers.base import Router, ScoringRouter
from gearshift.store.view import TraceView, cache_figures, cache_line

QUALITY_LEVELS = (0.90, 0.95, 0.99)


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
    cache: dict[str, Any] | None = None  # the response cache over the traces reported on (store.view.cache_figures)

    def count_cache(self, traces: Iterable[Mapping[str, Any] | TraceView]) -> None:
        """Add what the response cache did over the traces (its hits' savings) to the report, as a note."""
        figures = cache_figures(traces)
        if figures["requests"]:
            self.cache = figures
            self.notes.append(cache_line(figures))

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
        if row.band is not None:
            return f"random (expected; 5-95% of {row.band.draws} draws)"
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


def _pair_of(router: ScoringRouter, columns: Mapping[str, str]) -> tuple[str, str]:
    return columns.get(router.weak, router.weak), columns.get(router.strong, router.strong)


def build_report(outcomes: Outcomes, weak: str | None = None, strong: str | None = None,
                 routers: Sequence[Router] = (), *, columns: Mapping[str, str] | None = None,
                 levels: Sequence[float] = QUALITY_LEVELS, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 random_seed: int = 0, random_draws: int = RANDOM_DRAWS, cascades: Sequence[CascadeRecords] = (),
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
                         random_seed=random_seed, random_draws=random_draws, levels=levels, progress=progress)
    counts = resample_matrix(len(o), n_boot, seed)  # the very resamples evaluate_pair used: paired intervals
    swept_scores = {"oracle": qs - qw, **swept_scores}
    to_strong.update({f"always {weak}": np.zeros(len(o), bool), f"always {strong}": np.ones(len(o), bool),
                      "oracle": qs > qw})

    ratios: dict[str, dict[str, Estimate]] = {}
    level_results: list[LevelResult] = []
    bands: dict[str, Band] = {}
    for r in rows:
        if r.band is not None:  # random: expected figures, with the band of its draws
            ratios[r.name] = {"savings": r.band.savings, "quality_retained": r.band.quality_retained}
            bands[r.name] = Band(r.band.grid, r.band.pgr_low, r.band.pgr_high)
            for lv, got in r.band.levels.items():
                level_results.append(LevelResult(r.name, lv, got[0] if got else None, got[1] if got else None,
                                                 float(got is not None)))
            continue
        ts = to_strong[r.name]
        ratios[r.name] = _ratio_estimates(counts, np.where(ts, qs, qw), np.where(ts, cs, cw), qs, cs, alpha)

    step = max(1, 2_000_000 // max(len(o), 1))
    for name, sc in swept_scores.items():
        swept, band = swept_levels(sc, o, weak, strong, counts, levels, alpha, name, step, progress)
        level_results += swept
        bands[name] = band
    level_results += hull_levels(o, strong, counts, levels, alpha)
    for r in rows:
        if r.curve is None and r.kind != "fixed":  # replayed pair routers: one operating point
            est = ratios[r.name]
            for level in levels:
                ok = est["quality_retained"].value >= level - 1e-12
                level_results.append(LevelResult(r.name, level, est["savings"] if ok else None,
                                                 r.strong_share if ok else None, float(ok)))

    mc, mq = (a[0] for a in (model_means(None, o.cost), model_means(None, o.quality)))
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
        # A router with one operating point can be mixed with the single models (send a share of prompts
        # to one of them), so its curve is the hull of its point and theirs: read alone, a point counts 0
        # below its cost, and the oracle ranked below the models it picks from.
        for p in report.points:
            report.aiq[p.name] = metrics.aiq(np.r_[mc, p.cost.value], np.r_[mq, p.quality.value], (lo, hi))
        od = metrics.oracle_decisions(o)
        ok = ~np.isnan(od.quality) & ~np.isnan(od.cost)
        report.oracle_point = (float(od.cost[ok].mean()), float(od.quality[ok].mean()))
        report.aiq[f"oracle (all {len(o.models)} models)"] = metrics.aiq(
            np.r_[mc, report.oracle_point[0]], np.r_[mq, report.oracle_point[1]], (lo, hi))
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
            images[name] = png(fig)
    if progress:
        progress("plots", len(PLOTS), len(PLOTS))
    paths = [out]
    out.write_text(render_html(report, images, command), encoding="utf-8")
    for name, image in images.items():
        p = out.with_name(f"{out.stem}-{name.replace('_', '-')}.png")
        p.write_bytes(image)
        paths.append(p)
    return paths


__all__ = [
    "QUALITY_LEVELS", "Band", "CascadeRecords", "CascadeSummary", "GroupStats", "LevelResult", "PointRouter", "Report",
    "build_report", "cascade_records_from_replay", "cascade_records_from_traces", "cascade_report", "cheapest_reaching",
    "plot_cascades", "plot_levels", "plot_pgr_share", "plot_quality_cost", "render_html", "summarise_cascade",
    "write_report",
]
