"""Lab-only baselines: routers with no training that a learned router must beat.

`length`: longer prompts go to the strong model. It is the swept form of a token-length rule
(the `rules` router's `min_tokens`), so the report can show the whole curve of that rule, not one
point. It is not a gateway router kind: it exists to be compared against.

`random_band`: the random router is not one curve but a distribution of them. Its expected
figures are the diagonal between always-weak and always-strong (quality and cost linear in the
strong share, APGR 0.5, CPT(x) = x); one seeded draw wanders around it. The band is the 5th-95th
percentiles of many seeded draws: a router inside it is indistinguishable from chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gearshift.lab import metrics
from gearshift.lab.bootstrap import Estimate, estimate
from gearshift.lab.levels import cheapest_reaching
from gearshift.lab.replay import Curve
from gearshift.outcomes.table import Outcomes
from gearshift.request import ChatRequest
from gearshift.route import Route
from gearshift.routers.base import ScoringRouter

# Prompt tokens at which the length score is 0.5; only the order of scores matters for a sweep.
LENGTH_SCALE_TOKENS = 100.0

BUILTIN_BASELINES = ("length",)


class LengthRouter(ScoringRouter):
    """Score = t / (t + scale) for t estimated prompt tokens: monotone in length, in [0, 1).

    threshold None: not set yet; the report sets it to the median score of its prompts (the longer
    half goes strong, like random's half), and calibration replaces it anyway.
    """

    kind = "length"

    def __init__(self, name: str, weak: str, strong: str, threshold: float | None = None,
                 scale: float = LENGTH_SCALE_TOKENS) -> None:
        super().__init__(name, None)
        self.weak, self.strong, self.scale = weak, strong, scale
        self.threshold = threshold  # type: ignore[assignment]

    def score(self, request: ChatRequest) -> float:
        t = float(request.estimated_tokens())
        return t / (t + self.scale)

    def route(self, request: ChatRequest) -> Route:
        if self.threshold is None:
            raise ValueError(f"{self.name}: no threshold set; calibrate it or set one")
        return super().route(request)

    def scores(self, requests: Sequence[ChatRequest]) -> np.ndarray:
        t = np.fromiter((r.estimated_tokens() for r in requests), dtype=float, count=len(requests))
        return np.asarray(t / (t + self.scale))


RANDOM_DRAWS = 200
RANDOM_BAND = 0.90  # the band holds the middle 90% of draws: 5th to 95th percentile
# Strong shares at which the draws' PGR and quality are read off for the band.
_GRID = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class RandomBand:
    """The random router (each prompt strong with probability 1/2): each figure's expected value, with
    the 5th-95th percentiles of `draws` seeded draws as its low and high. `levels`: per quality level,
    (savings, strong share) of the cheapest point keeping it (None: not reached in expectation)."""

    draws: int
    share: Estimate
    quality: Estimate
    cost: Estimate
    savings: Estimate
    quality_retained: Estimate
    apgr: Estimate
    cpt50: Estimate
    cpt80: Estimate
    expected: Curve  # the diagonal
    grid: np.ndarray = field(repr=False)  # strong shares
    pgr_low: np.ndarray = field(repr=False)
    pgr_high: np.ndarray = field(repr=False)
    quality_low: np.ndarray = field(repr=False)
    quality_high: np.ndarray = field(repr=False)
    levels: dict[float, tuple[Estimate, Estimate] | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"random: expected, band {1 - RANDOM_BAND:.0%}/2..{RANDOM_BAND:.0%} of {self.draws} draws"


def random_band(o: Outcomes, weak: str, strong: str, draws: int = RANDOM_DRAWS, seed: int = 0,
                levels: Sequence[float] = ()) -> RandomBand:
    """The random router's expected figures on `o` (every prompt graded for both models) and the
    spread of `draws` seeded draws around them."""
    w, s = o.index(weak), o.index(strong)
    qw, qs = np.asarray(o.quality[:, w], float), np.asarray(o.quality[:, s], float)
    cw, cs = np.asarray(o.cost[:, w], float), np.asarray(o.cost[:, s], float)
    q_ref, c_ref = float(qs.mean()), float(cs.mean())
    n = len(o)
    # Each draw as a whole sweep at once: a draw's uniform numbers order the prompts (highest first go
    # strong first), so its curve is the running sum of the strong model's gains in that order.
    u = np.random.default_rng(seed).random((draws, n))
    order = np.argsort(-u, axis=1)
    zero = np.zeros((draws, 1))
    quality = qw.mean() + np.concatenate([zero, np.cumsum((qs - qw)[order], axis=1)], axis=1) / n
    cost = cw.mean() + np.concatenate([zero, np.cumsum((cs - cw)[order], axis=1)], axis=1) / n
    share = np.broadcast_to(np.arange(n + 1) / n, quality.shape)
    curves = Curve(np.r_[np.inf, np.linspace(1.0, 0.0, n)], share, quality, cost, weak, strong, n)
    k = (u >= 0.5).sum(axis=1)  # RandomRouter's threshold with equal weights: its operating point
    q, c = quality[np.arange(draws), k], cost[np.arange(draws), k]
    names = ("share", "quality", "cost", "savings", "retained", "apgr", "cpt50", "cpt80")
    figs = dict(zip(names, (k / n, q, c, metrics.savings(c, c_ref), metrics.quality_retained(q, q_ref),
                            metrics.apgr(curves), metrics.cpt(curves, 0.5), metrics.cpt(curves, 0.8)), strict=True))
    pgr = np.stack([np.interp(_GRID, share[0], row) for row in curves.pgr])
    qual = np.stack([np.interp(_GRID, share[0], row) for row in quality])
    lv_sav = np.empty((draws, len(levels)))
    lv_share = np.empty((draws, len(levels)))
    for j, lv in enumerate(levels):
        lc, ls = cheapest_reaching(share, quality, cost, lv * q_ref)
        lv_sav[:, j], lv_share[:, j] = 1 - lc / c_ref, ls
    exp = metrics.expected_random_curve(o, weak, strong)
    q_exp, c_exp = float((qw.mean() + qs.mean()) / 2), float((cw.mean() + cs.mean()) / 2)
    expected = {"share": 0.5, "quality": q_exp, "cost": c_exp, "savings": float(metrics.savings(c_exp, c_ref)),
                "retained": float(metrics.quality_retained(q_exp, q_ref)), "apgr": float(metrics.apgr(exp)),
                "cpt50": float(metrics.cpt(exp, 0.5)), "cpt80": float(metrics.cpt(exp, 0.8))}
    alpha = round(1 - RANDOM_BAND, 9)
    est = {k: estimate(expected[k], figs[k], alpha) for k in names}
    level_est: dict[float, tuple[Estimate, Estimate] | None] = {}
    for j, lv in enumerate(levels):
        cost, share = cheapest_reaching(exp.strong_share, exp.quality, exp.cost, lv * q_ref)
        level_est[lv] = None if np.isnan(cost) else (estimate(1 - float(cost) / c_ref, lv_sav[:, j], alpha),
                                                     estimate(float(share), lv_share[:, j], alpha))
    with np.errstate(invalid="ignore"):
        p_lo, p_hi = np.nanquantile(pgr, [alpha / 2, 1 - alpha / 2], axis=0)
        q_lo, q_hi = np.nanquantile(qual, [alpha / 2, 1 - alpha / 2], axis=0)
    return RandomBand(draws, est["share"], est["quality"], est["cost"], est["savings"], est["retained"], est["apgr"],
                      est["cpt50"], est["cpt80"], exp, _GRID.copy(), p_lo, p_hi, q_lo, q_hi, level_est)


def baseline(name: str, weak: str, strong: str, **options: Any) -> ScoringRouter:
    """A built-in baseline by name (see BUILTIN_BASELINES)."""
    if name == "length":
        return LengthRouter("length", weak, strong, **options)
    raise KeyError(f"no built-in baseline {name!r}; there are {list(BUILTIN_BASELINES)}")


__all__ = ["BUILTIN_BASELINES", "RANDOM_BAND", "RANDOM_DRAWS", "LengthRouter", "RandomBand", "baseline", "random_band"]
