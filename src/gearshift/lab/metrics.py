"""The lab's metrics, each defined once. Every function takes plain numbers or a Curve.

Two-model metrics follow RouteLLM (Ong et al., arXiv 2406.18665):
- PGR = (q - q_weak) / (q_strong - q_weak), the performance gap recovered.
- APGR = the area under PGR over the strong-call share in [0, 1].
- CPT(x%) = the least strong-call share at which PGR reaches x%.

Differences from RouteLLM's evaluation code (routellm/evals/evaluate.py), on purpose:
- RouteLLM samples 11 thresholds (10 quantile bins of the scores) and applies np.trapz to those
  points; we integrate over every distinct operating point, which is exact for the piecewise-
  linear curve a router can realise (randomising between adjacent thresholds). On a random router
  both give ~0.5; on a sharp router the 11-point estimate can be off by a few hundredths.
- RouteLLM computes CPT with np.interp(target, accuracy, share), which assumes quality rises
  with the share; np.interp on a non-increasing sequence returns meaningless values. We scan the
  points for the first crossing and interpolate on that segment only.
- q_weak and q_strong are the curve's own end points (always-weak and always-strong on the same
  prompts), as in RouteLLM, so PGR is 0 at share 0 and 1 at share 1 by construction.

Multi-model metrics follow RouterBench (Hu et al., arXiv 2403.12031): a router is a set of
(cost, quality) points; its non-decreasing convex hull (NDCH) is what mixing its configurations
achieves; AIQ = (1 / (c_max - c_min)) * integral of the NDCH over [c_min, c_max]. The "zero
router" is the NDCH of the single models' points (randomly mixing models, no intelligence).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gearshift.lab.replay import Curve, Decisions, sweep_scores
from gearshift.outcomes.table import Outcomes

# --- simple aggregates ---------------------------------------------------------------------------


def mean_cost(cost: np.ndarray | Sequence[float]) -> float:
    """Mean USD per prompt."""
    return float(np.mean(np.asarray(cost, dtype=float)))


def mean_quality(quality: np.ndarray | Sequence[float]) -> float:
    """Mean quality per prompt (accuracy for 0/1 quality)."""
    return float(np.mean(np.asarray(quality, dtype=float)))


def savings(cost: float | np.ndarray, reference_cost: float | np.ndarray) -> float | np.ndarray:
    """Share of the reference's spend saved: 1 - cost / reference_cost (reference: always-strongest)."""
    return 1.0 - np.asarray(cost, dtype=float) / np.asarray(reference_cost, dtype=float)


def quality_retained(quality: float | np.ndarray, reference_quality: float | np.ndarray) -> float | np.ndarray:
    """quality / reference_quality (reference: always-strongest); 1.0 means nothing was lost."""
    return np.asarray(quality, dtype=float) / np.asarray(reference_quality, dtype=float)


def strong_share(choice: np.ndarray, strong_index: int) -> float:
    """Fraction of prompts sent to the strong model (choice: per-prompt model index)."""
    return float(np.mean(np.asarray(choice) == strong_index))


def strongest(outcomes: Outcomes) -> str:
    """The model with the highest mean quality (ties: the more expensive): the reference for savings."""
    q = np.nanmean(outcomes.quality, axis=0)
    c = np.nan_to_num(np.nanmean(outcomes.cost, axis=0), nan=0.0)
    return outcomes.models[int(np.lexsort((c, q))[-1])]


# --- RouteLLM: PGR, APGR, CPT ------------------------------------------------------------------------


def pgr(quality: float | np.ndarray, q_weak: float | np.ndarray, q_strong: float | np.ndarray) -> np.ndarray:
    """Performance gap recovered: (q - q_weak) / (q_strong - q_weak). NaN when the gap is 0."""
    q, w, s = (np.asarray(x, dtype=float) for x in (quality, q_weak, q_strong))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (q - w) / (s - w)


def apgr_points(share: np.ndarray, pgr_values: np.ndarray) -> np.ndarray | float:
    """Area under the piecewise-linear PGR curve through the points, per unit of share.

    share, pgr_values: (..., k), share ascending along the last axis. The trapezoid rule on the
    points is exact for the piecewise-linear curve; dividing by the share span makes it the mean
    PGR (the span is 1 for complete curves, which run from share 0 to 1).
    """
    x = np.asarray(share, dtype=float)
    y = np.asarray(pgr_values, dtype=float)
    # A curve without a gap (PGR NaN or infinite, see pgr) has no area: NaN, without numpy's warning.
    with np.errstate(invalid="ignore", divide="ignore"):
        area = np.sum((x[..., 1:] - x[..., :-1]) * (y[..., 1:] + y[..., :-1]) / 2, axis=-1)
        out = area / (x[..., -1] - x[..., 0])
    return float(out) if np.ndim(out) == 0 else out


def apgr(curve: Curve) -> np.ndarray | float:
    """APGR of a curve (a float, or one per resample for a bootstrap batch)."""
    return apgr_points(curve.strong_share, curve.pgr)


# Far above the rounding error of PGR (a ratio of sums over thousands of prompts, about 1e-15) and
# far below any difference a curve can show (one prompt of 100,000 moves PGR by about 1e-5).
PGR_TOLERANCE = 1e-9


def cpt_points(share: np.ndarray, pgr_values: np.ndarray, x: float) -> np.ndarray | float:
    """The least share at which the piecewise-linear PGR curve reaches x (a fraction, e.g. 0.5).

    Interpolated, not the first grid point: scans the points in order of share for the first one
    with PGR >= x and interpolates linearly on the segment that crosses; it does not assume PGR
    rises with share. NaN if never reached. "Reaches" allows PGR_TOLERANCE of floating error, so a
    curve that meets x exactly (PGR is a ratio of sums: 0.5 may come out as 0.49999999999999967)
    is not read as passing it by on the next segment.
    """
    s = np.asarray(share, dtype=float)
    p = np.asarray(pgr_values, dtype=float)
    reached = p >= x - PGR_TOLERANCE
    any_reached = reached.any(axis=-1)
    i = np.argmax(reached, axis=-1)  # first index reaching x (0 if none; masked below)
    prev = np.maximum(i - 1, 0)
    s1 = np.take_along_axis(s, i[..., None], -1)[..., 0]
    p1 = np.take_along_axis(p, i[..., None], -1)[..., 0]
    s0 = np.take_along_axis(s, prev[..., None], -1)[..., 0]
    p0 = np.take_along_axis(p, prev[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        # i == 0 means the first point already reaches x: s0 == s1 there, frac is irrelevant.
        frac = np.where(i > 0, np.clip((x - p0) / (p1 - p0), 0.0, 1.0), 0.0)
    out = np.where(any_reached, s0 + frac * (s1 - s0), np.nan)
    return float(out) if np.ndim(out) == 0 else out


def cpt(curve: Curve, x: float) -> np.ndarray | float:
    """CPT(x) of a curve: least strong-call share reaching PGR x (x=0.5 for CPT(50%))."""
    return cpt_points(curve.strong_share, curve.pgr, x)


def expected_random_curve(outcomes: Outcomes, weak: str, strong: str) -> Curve:
    """The random router's expected curve: the straight line from all-weak to all-strong.

    Sending each prompt strong with probability p gives, in expectation, quality and cost linear
    in p, so APGR = 0.5 and CPT(x) = x exactly.
    """
    n = len(outcomes)
    return sweep_scores(np.zeros(n), outcomes, weak, strong, label="random (expected)")


# --- the oracle ----------------------------------------------------------------------------------------


def oracle_choice(outcomes: Outcomes, pass_bar: float | None = None) -> np.ndarray:
    """Per prompt, the index of the cheapest model that gets it right.

    pass_bar None (default): "right" means the best quality any model reached on that prompt
    (for 0/1 quality: correct; when no model is correct, all tie at 0 and the cheapest is taken).
    pass_bar b: the cheapest model with quality >= b; when none passes, fall back to the default
    rule (cheapest among the best). Cost ties go to the model listed first. Models without a
    quality (NaN) for a prompt are never chosen for it; unknown costs count as most expensive.
    """
    q = np.asarray(outcomes.quality, dtype=float)
    c = np.asarray(outcomes.cost, dtype=float)
    qq = np.where(np.isnan(q), -np.inf, q)
    ok = qq >= qq.max(axis=1, keepdims=True)
    if pass_bar is not None:
        passing = qq >= pass_bar
        ok = np.where(passing.any(axis=1, keepdims=True), passing, ok)
    # Unknown costs rank after every known one but before the models that are not eligible.
    key = np.where(ok, np.where(np.isnan(c), np.finfo(float).max, c), np.inf)
    return np.argmin(key, axis=1)


def oracle_decisions(outcomes: Outcomes, pass_bar: float | None = None) -> Decisions:
    """The oracle router's decisions (see oracle_choice): the upper limit of any router."""
    j = oracle_choice(outcomes, pass_bar)
    rows = np.arange(len(outcomes))
    return Decisions(models=list(outcomes.models), choice=j, quality=np.asarray(outcomes.quality, float)[rows, j],
                     cost=np.asarray(outcomes.cost, float)[rows, j], router="oracle")


def oracle_pair_choice(outcomes: Outcomes, weak: str, strong: str) -> np.ndarray:
    """Two-model oracle: True (strong) exactly where the strong answer is better than the weak one.

    For 0/1 quality its strong share is the fraction where weak fails and strong succeeds.
    """
    w, s = outcomes.index(weak), outcomes.index(strong)
    return np.asarray(outcomes.quality[:, s] > outcomes.quality[:, w])


def oracle_curve(outcomes: Outcomes, weak: str, strong: str) -> Curve:
    """The best quality reachable at each strong-call share: prompts sent strong in order of gain.

    Scoring each prompt by q_strong - q_weak and sweeping gives, for every k, the largest total
    quality any routing with exactly k strong calls can get, so no router's curve lies above it.
    For 0/1 quality it rises with slope 1 up to share K/n (K = prompts where only the strong model
    is right), stays flat, and falls over the prompts where only the weak model is right.
    Its CPT(x) is x * (q_strong - q_weak) on that rising part.
    """
    w, s = outcomes.index(weak), outcomes.index(strong)
    gain = np.asarray(outcomes.quality[:, s] - outcomes.quality[:, w], dtype=float)
    return sweep_scores(gain, outcomes, weak, strong, label="oracle")


# --- RouterBench: non-decreasing convex hull and AIQ ------------------------------------------------


def ndch(cost: np.ndarray | Sequence[float], quality: np.ndarray | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing convex hull of (cost, quality) points: the upper hull from the cheapest point
    up to the best one (the cheapest of the best), as (cost, quality) vertices in cost order.

    Any point on it is reachable by mixing two configurations at random; beyond the best point,
    spending more buys nothing, so the hull stays flat there (see hull_value).
    """
    c = np.asarray(cost, dtype=float)
    q = np.asarray(quality, dtype=float)
    keep = ~(np.isnan(c) | np.isnan(q))
    c, q = c[keep], q[keep]
    if len(c) == 0:
        raise ValueError("ndch needs at least one point with a cost and a quality")
    order = np.lexsort((-q, c))  # by cost, best quality first among equal costs
    c, q = c[order], q[order]
    first = np.concatenate([[True], c[1:] != c[:-1]])
    c, q = c[first], q[first]
    # Stop at the best point: the hull is non-decreasing.
    top = int(np.argmax(q))
    c, q = c[: top + 1], q[: top + 1]
    hull: list[int] = []
    for i in range(len(c)):  # Andrew's monotone chain, upper hull
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (c[b] - c[a]) * (q[i] - q[a]) - (q[b] - q[a]) * (c[i] - c[a])
            if cross >= 0:  # b is on or below the segment a-i
                hull.pop()
            else:
                break
        hull.append(i)
    return c[hull], q[hull]


def hull_value(hull_cost: np.ndarray, hull_quality: np.ndarray, at_cost: np.ndarray | float) -> np.ndarray:
    """The hull's quality at given costs: linear between vertices, flat after the last, and 0
    before the first (no configuration of the router is that cheap)."""
    x = np.asarray(at_cost, dtype=float)
    v = np.interp(x, hull_cost, hull_quality)
    return np.where(x < hull_cost[0], 0.0, v)


def aiq(cost: np.ndarray | Sequence[float], quality: np.ndarray | Sequence[float],
        cost_range: tuple[float, float] | None = None) -> float:
    """RouterBench's AIQ: mean of the router's NDCH over the cost range.

    AIQ = 1/(c_max - c_min) * integral_{c_min}^{c_max} NDCH(c) dc, computed exactly (the hull is
    piecewise linear). cost_range defaults to the router's own cheapest and dearest points; pass a
    common range (e.g. the cheapest and dearest single models) to compare routers. The hull counts
    0 below the router's cheapest point and stays flat above its best point. RouterBench's code
    (evaluation/AIQ.py) divides by max cost instead of (c_max - c_min): the same up to an offset
    when c_min is ~0.
    """
    hc, hq = ndch(cost, quality)
    c_all = np.asarray(cost, dtype=float)
    lo, hi = cost_range if cost_range is not None else (float(np.nanmin(c_all)), float(np.nanmax(c_all)))
    if hi <= lo:
        return float(hull_value(hc, hq, lo))
    start = max(lo, float(hc[0]))  # below the cheapest point the hull is 0: no area
    if hi <= start:
        return 0.0
    xs = np.concatenate([[start], hc[(hc > start) & (hc < hi)], [hi]])
    ys = np.interp(xs, hc, hq)  # linear between vertices, flat after the last
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))
    return area / (hi - lo)


def model_points(outcomes: Outcomes, models: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean cost, mean quality) of always using each model (NaN-aware)."""
    cols = [outcomes.index(m) for m in (models or outcomes.models)]
    return np.nanmean(outcomes.cost[:, cols], axis=0), np.nanmean(outcomes.quality[:, cols], axis=0)


def zero_router(outcomes: Outcomes, models: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RouterBench's zero router: the NDCH of the single models' (cost, quality) points."""
    return ndch(*model_points(outcomes, models))


__all__ = [
    "aiq", "apgr", "apgr_points", "cpt", "cpt_points", "expected_random_curve", "hull_value", "mean_cost",
    "mean_quality", "model_points", "ndch", "oracle_choice", "oracle_curve", "oracle_decisions",
    "oracle_pair_choice", "pgr", "quality_retained", "savings", "strong_share", "strongest", "zero_router",
]
