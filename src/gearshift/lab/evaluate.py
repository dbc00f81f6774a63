"""One call that evaluates routers on a weak/strong pair: the rows of `gearshift lab evaluate`.

Every figure comes with a bootstrap interval over prompts. Rows: always-weak, always-strong,
random (the no-intelligence baseline: its expected figures, the diagonal, with the 5th-95th
percentiles of seeded draws as the band, lab.baselines.random_band), the oracle (upper limit), and
any routers given: scoring routers are swept (APGR, CPT) and also reported at their own threshold;
other routers are replayed prompt by prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from gearshift.lab import metrics
from gearshift.lab.baselines import RANDOM_DRAWS, RandomBand, random_band
from gearshift.lab.bootstrap import Estimate, bootstrap, bootstrap_curve, resample_matrix
from gearshift.lab.replay import Curve, ScoreOrder, fixed_decisions, replay, router_scores
from gearshift.outcomes.table import Outcomes
from gearshift.routers.base import Router, ScoringRouter

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class Row:
    """One router's figures on the pair. Estimates carry 1 - alpha bootstrap intervals.

    strong_share/quality/cost: at the router's operating point (its configured threshold; for the
    oracle, strong exactly where strong is better). apgr/cpt50/cpt80: over its whole sweep
    (None for routers without a score). savings and quality_retained are against always-strong.
    For random, each figure is its expected value with the band of seeded draws (`band`) as its
    interval, and the curve is the expected diagonal.
    """

    name: str
    kind: str  # "fixed", "scoring", "oracle", "replay"
    strong_share: Estimate
    quality: Estimate
    cost: Estimate
    savings: float
    quality_retained: float
    apgr: Estimate | None = None
    cpt50: Estimate | None = None
    cpt80: Estimate | None = None
    curve: Curve | None = field(default=None, repr=False)
    band: RandomBand | None = field(default=None, repr=False)


def default_pair(outcomes: Outcomes) -> tuple[str, str]:
    """(weak, strong): for two models, the worse and the better; else the cheapest and the best."""
    if len(outcomes.models) == 2:
        q = np.nanmean(outcomes.quality, axis=0)
        order = np.argsort(q, kind="stable")
        return outcomes.models[int(order[0])], outcomes.models[int(order[1])]
    strong = metrics.strongest(outcomes)
    c = np.nanmean(outcomes.cost, axis=0)
    weak = outcomes.models[int(np.nanargmin(c))]
    if weak == strong:
        raise ValueError("the cheapest model is also the best; give weak and strong explicitly")
    return weak, strong


def complete(outcomes: Outcomes, models: Sequence[str]) -> Outcomes:
    """The prompts that have a quality for every one of `models`."""
    cols = [outcomes.index(m) for m in models]
    ok = ~np.isnan(np.asarray(outcomes.quality[:, cols], float)).any(axis=1)
    return outcomes if ok.all() else outcomes.subset(ok)


def _curve_stats() -> dict[str, Callable[[Curve], object]]:
    return {"apgr": metrics.apgr, "cpt50": lambda c: metrics.cpt(c, 0.5), "cpt80": lambda c: metrics.cpt(c, 0.8)}


def _point_estimates(to_strong: np.ndarray, qw: np.ndarray, qs: np.ndarray, cw: np.ndarray, cs: np.ndarray,
                     counts: np.ndarray, alpha: float) -> dict[str, Estimate]:
    table = np.stack([np.where(to_strong, qs, qw), np.where(to_strong, cs, cw), to_strong.astype(float)], axis=1)
    m = len(table)

    def stat(d: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
        r = np.asarray(w, dtype=float) @ d / m  # one product gives all three means
        return {"quality": r[:, 0], "cost": r[:, 1], "share": r[:, 2]}

    return bootstrap(table, stat, alpha=alpha, weighted=True, counts=counts)  # type: ignore[return-value]


def evaluate_pair(outcomes: Outcomes, weak: str, strong: str, routers: Sequence[Router] = (), *,
                  columns: Mapping[str, str] | None = None, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                  random_seed: int = 0, random_draws: int = RANDOM_DRAWS, levels: Sequence[float] = (),
                  progress: Progress | None = None) -> list[Row]:
    """Rows for always-weak, always-strong, random, oracle and each router, with intervals.

    random_seed, random_draws: the seed and number of the random router's draws; `levels`: quality
    levels whose savings the random band also gives (RandomBand.levels).

    Prompts lacking a quality for weak or strong are left out (see `complete`). The same seed gives
    the same resamples for every row, so intervals of different rows are paired.
    """
    o = complete(outcomes, [weak, strong])
    w, s = o.index(weak), o.index(strong)
    qw, qs = np.asarray(o.quality[:, w], float), np.asarray(o.quality[:, s], float)
    cw, cs = np.asarray(o.cost[:, w], float), np.asarray(o.cost[:, s], float)
    ref_q, ref_c = float(qs.mean()), float(cs.mean())
    rows: list[Row] = []
    counts = resample_matrix(len(o), n_boot, seed)  # shared: every row sees the same resamples

    def row(name: str, kind: str, to_strong: np.ndarray, scores: np.ndarray | None = None) -> Row:
        if progress:
            progress(name, 0, 1)
        est = _point_estimates(to_strong, qw, qs, cw, cs, counts, alpha)
        r = Row(name=name, kind=kind, strong_share=est["share"], quality=est["quality"], cost=est["cost"],
                savings=float(metrics.savings(float(np.mean(np.where(to_strong, cs, cw))), ref_c)),
                quality_retained=float(metrics.quality_retained(float(np.mean(np.where(to_strong, qs, qw))), ref_q)))
        if scores is not None:
            cb = bootstrap_curve(scores, o, weak, strong, _curve_stats(), alpha=alpha, counts=counts,
                                 progress=(lambda d, t: progress(name, d, t)) if progress else None)
            r.apgr, r.cpt50, r.cpt80 = cb["apgr"], cb["cpt50"], cb["cpt80"]
            r.curve = ScoreOrder.from_scores(scores).curve(o, weak, strong, label=name)
        if progress:
            progress(name, 1, 1)
        rows.append(r)
        return r

    n = len(o)
    row(f"always {weak}", "fixed", np.zeros(n, bool))
    row(f"always {strong}", "fixed", np.ones(n, bool))
    band = random_band(o, weak, strong, random_draws, random_seed, levels)
    rows.append(Row("random", "scoring", band.share, band.quality, band.cost, band.savings.value,
                    band.quality_retained.value, band.apgr, band.cpt50, band.cpt80, band.expected, band))
    gain = qs - qw
    row("oracle", "oracle", gain > 0, gain)
    for router in routers:
        if isinstance(router, ScoringRouter) and getattr(router, "weak", None) and getattr(router, "strong", None):
            sc = router_scores(router, o)
            row(router.name, "scoring", sc >= router.threshold, sc)
        else:
            dec = replay(router, o, columns=columns)
            to_strong = dec.choice == s
            other = ~np.isin(dec.choice, [w, s])
            if other.any():
                raise ValueError(f"router {router.name!r} chose models other than {weak!r} and {strong!r}")
            row(router.name, "replay", to_strong)
    return rows


def evaluate_fixed(outcomes: Outcomes, model: str) -> tuple[float, float]:
    """(mean quality, mean cost) of always using `model` on the prompts it has answers for."""
    d = fixed_decisions(complete(outcomes, [model]), model)
    return d.mean_quality, d.mean_cost


__all__ = ["Row", "complete", "default_pair", "evaluate_fixed", "evaluate_pair"]
