"""The cheapest operating point of a cost-quality curve that keeps a quality level, and the savings
it brings at each level (with bootstrap intervals): the report's "savings at quality levels"."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gearshift.lab import metrics
from gearshift.lab.bootstrap import Estimate, estimate
from gearshift.lab.replay import ScoreOrder
from gearshift.outcomes.table import Outcomes

Progress = Callable[[str, int, int], None]  # (stage, done, total)

# Share grid on which the PGR bands are read off each resampled curve.
_BAND_GRID = np.linspace(0.0, 1.0, 101)


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


def _band(share: np.ndarray, pgr: np.ndarray) -> np.ndarray:
    """PGR of each resampled curve read off at the grid shares, (B, grid)."""
    out = np.empty((share.shape[0], len(_BAND_GRID)))
    for b in range(share.shape[0]):
        out[b] = np.interp(_BAND_GRID, share[b], pgr[b])
    return out


def swept_levels(scores: np.ndarray, o: Outcomes, weak: str, strong: str, counts: np.ndarray,
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


def model_means(counts: np.ndarray | None, values: np.ndarray) -> np.ndarray:
    """NaN-aware per-model means, one row per resample (or one row for counts None)."""
    v = np.asarray(values, float)
    has = (~np.isnan(v)).astype(float)
    w = np.ones((1, len(v))) if counts is None else counts.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ np.nan_to_num(v)) / (w @ has)


def hull_levels(o: Outcomes, strong: str, counts: np.ndarray, levels: Sequence[float],
                 alpha: float) -> list[LevelResult]:
    """The single-model hull (zero router): the cheapest random mix of models reaching each level."""
    s = o.index(strong)

    def savings_at(cm: np.ndarray, qm: np.ndarray) -> np.ndarray:
        hc, hq = metrics.ndch(cm, qm)
        cost, _ = cheapest_reaching(hc, hq, hc, np.asarray(levels) * qm[s])
        return np.asarray(1 - cost / cm[s])

    full = savings_at(model_means(None, o.cost)[0], model_means(None, o.quality)[0])
    cost_b, q_b = model_means(counts, o.cost), model_means(counts, o.quality)
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



__all__ = ["Band", "LevelResult", "Progress", "cheapest_reaching", "hull_levels", "model_means", "swept_levels"]
