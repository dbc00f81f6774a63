"""Bootstrap confidence intervals over prompts, vectorised.

A resample draws n prompts with replacement; we represent it by per-prompt counts (a multinomial
draw), so a statistic that is a weighted sum over prompts is one matrix product per chunk of
resamples instead of a Python loop. Curves are re-computed on each resample from the one sorted
order of the scores (the scores do not change; only which prompts are counted, and how often),
so 1,000 resamples of a 14k-prompt sweep take about a second.

Intervals are percentile intervals: (alpha/2, 1 - alpha/2) quantiles of the resampled values
(NaN resamples ignored); `value` is the statistic on the original data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gearshift.lab.replay import Curve, ScoreOrder
from gearshift.outcomes.table import Outcomes

# Rows of the (resamples x prompts) count matrix built at once: bounds memory to ~chunk * n * 8 bytes.
CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class Estimate:
    """A figure with its bootstrap percentile interval at level 1 - alpha."""

    value: float
    low: float
    high: float
    alpha: float = 0.05
    n_resamples: int = 0

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def format(self, spec: str = ".3f", scale: float = 1.0, suffix: str = "") -> str:
        """E.g. est.format(".1f", 100, "%") -> '49.8% [46.1%, 53.0%]'."""
        v, lo, hi = (x * scale for x in (self.value, self.low, self.high))
        return f"{v:{spec}}{suffix} [{lo:{spec}}{suffix}, {hi:{spec}}{suffix}]"


def estimate(value: float, samples: np.ndarray, alpha: float = 0.05) -> Estimate:
    """Percentile interval of bootstrap samples around `value`."""
    s = np.asarray(samples, dtype=float)
    s = s[~np.isnan(s)]
    if len(s) == 0:
        return Estimate(float(value), float("nan"), float("nan"), alpha, 0)
    lo, hi = np.quantile(s, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(value), float(lo), float(hi), alpha, len(s))


Z95 = 1.959963984540054  # the normal's 97.5% quantile


def normal_estimate(value: float, variance: float) -> Estimate:
    """The normal 95% interval around `value` (the bootstrap's limit on many varied values): no resamples."""
    half = Z95 * float(np.sqrt(variance))
    return Estimate(float(value), float(value) - half, float(value) + half, 0.05, 0)


def resample_counts(n_rows: int, n_resamples: int, seed: int | np.random.Generator = 0,
                    chunk: int | None = None) -> Iterator[np.ndarray]:
    """Chunks of (c, n_rows) int counts: how often each row appears in each resample (rows sum to n_rows)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    chunk = chunk or max(1, CHUNK_CELLS // max(n_rows, 1))
    done = 0
    while done < n_resamples:
        c = min(chunk, n_resamples - done)
        idx = rng.integers(0, n_rows, size=(c, n_rows))
        flat = idx + (np.arange(c) * n_rows)[:, None]  # one bincount for the whole chunk
        yield np.bincount(flat.ravel(), minlength=c * n_rows).reshape(c, n_rows)
        done += c


def resample_matrix(n_rows: int, n_resamples: int, seed: int = 0) -> np.ndarray:
    """All resamples' counts at once, (n_resamples, n_rows) uint8: reuse it across routers so their
    intervals are paired (the same resamples) and the draws are made once."""
    out = np.empty((n_resamples, n_rows), dtype=np.uint8)
    done = 0
    for c in resample_counts(n_rows, n_resamples, seed):
        out[done:done + len(c)] = c  # a count above 255 has probability ~1e-500
        done += len(c)
    return out


def _chunks(counts: np.ndarray | None, n_rows: int, n: int, seed: int) -> Iterator[np.ndarray]:
    if counts is None:
        yield from resample_counts(n_rows, n, seed)
        return
    if counts.shape[1] != n_rows:
        raise ValueError(f"counts have {counts.shape[1]} columns for {n_rows} rows")
    step = max(1, CHUNK_CELLS // max(n_rows, 1))
    for i in range(0, counts.shape[0], step):
        yield counts[i:i + step]


Data = Outcomes | np.ndarray | Sequence[np.ndarray]


def _n_rows(data: Data) -> int:
    if isinstance(data, Outcomes | np.ndarray):
        return len(data)
    lengths = {len(a) for a in data}
    if len(lengths) != 1:
        raise ValueError(f"arrays to resample have different lengths: {sorted(lengths)}")
    return lengths.pop()


def _take(data: Data, rows: np.ndarray) -> Any:
    if isinstance(data, Outcomes):
        return data.subset(rows)
    if isinstance(data, np.ndarray):
        return data[rows]
    return type(data)(np.asarray(a)[rows] for a in data) if isinstance(data, tuple) else [np.asarray(a)[rows] for a in data]


def _collect(values: list[Any]) -> dict[str, np.ndarray] | np.ndarray:
    if isinstance(values[0], Mapping):
        return {k: np.concatenate([np.atleast_1d(np.asarray(v[k], dtype=float)) for v in values]) for k in values[0]}
    return np.concatenate([np.atleast_1d(np.asarray(v, dtype=float)) for v in values])


def bootstrap(data: Data, statistic: Callable[..., Any], n: int = 1000, seed: int = 0, alpha: float = 0.05,
              *, weighted: bool = False, counts: np.ndarray | None = None) -> Estimate | dict[str, Estimate]:
    """Bootstrap a statistic over prompts (rows).

    data: Outcomes, an array, or a tuple/list of arrays of equal length (resampled together).
    statistic: returns a float or a dict of floats.
      - weighted=False: called as statistic(resampled_data) once per resample (simple, slower).
      - weighted=True: called as statistic(data, counts) with counts (c, n_rows) per chunk of
        resamples; returns (c,) arrays (or a dict of them). The original value is computed with
        counts of ones. Use it for sums and means: e.g. `lambda q, w: w @ q / len(q)`.
    counts: a resample_matrix to use instead of drawing (weighted=True only; overrides n, seed).
    Returns an Estimate (or a dict of them, one per key).
    """
    rows = _n_rows(data)
    if weighted:
        original = statistic(data, np.ones((1, rows)))
        samples = _collect([statistic(data, w) for w in _chunks(counts, rows, n, seed)])
    else:
        original = statistic(data)
        rng = np.random.default_rng(seed)
        samples = _collect([statistic(_take(data, rng.integers(0, rows, size=rows))) for _ in range(n)])
    if isinstance(samples, dict):
        return {k: estimate(float(np.asarray(original[k]).ravel()[0]), samples[k], alpha) for k in samples}
    return estimate(float(np.asarray(original).ravel()[0]), samples, alpha)


CurveStatistic = Callable[[Curve], Any]


def bootstrap_curve(scores: np.ndarray, outcomes: Outcomes, weak: str, strong: str,
                    statistics: Mapping[str, CurveStatistic], n: int = 1000, seed: int = 0, alpha: float = 0.05,
                    thresholds: Sequence[float] | np.ndarray | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    counts: np.ndarray | None = None) -> dict[str, Estimate]:
    """Bootstrap figures of a threshold sweep, re-computing the curve on every resample.

    statistics: name -> function of a Curve returning a float for a single curve and an array
    (one per resample) for a batch curve; metrics.apgr and lambda c: metrics.cpt(c, 0.5) qualify.
    The sorted order and the operating points (thresholds) are computed once; each chunk of
    resamples is a few weighted cumulative sums over it. counts: a resample_matrix to reuse.
    """
    order = ScoreOrder.from_scores(scores, thresholds)
    full = order.curve(outcomes, weak, strong)
    collected: dict[str, list[np.ndarray]] = {k: [] for k in statistics}
    done = 0
    total = n if counts is None else counts.shape[0]
    for chunk in _chunks(counts, len(outcomes), n, seed):
        batch = order.curve(outcomes, weak, strong, weights=chunk)
        for k, fn in statistics.items():
            collected[k].append(np.atleast_1d(np.asarray(fn(batch), dtype=float)))
        done += chunk.shape[0]
        if progress:
            progress(done, total)
    return {k: estimate(float(statistics[k](full)), np.concatenate(v), alpha) for k, v in collected.items()}


def bootstrap_decisions(quality: np.ndarray, cost: np.ndarray, n: int = 1000, seed: int = 0,
                        alpha: float = 0.05, counts: np.ndarray | None = None) -> dict[str, Estimate]:
    """Mean quality and mean cost of per-prompt decisions, with intervals (vectorised)."""
    q = np.asarray(quality, dtype=float)
    c = np.asarray(cost, dtype=float)
    m = len(q)
    return bootstrap((q, c), lambda d, w: {"quality": w @ d[0] / m, "cost": w @ d[1] / m},  # type: ignore[return-value]
                     n=n, seed=seed, alpha=alpha, weighted=True, counts=counts)


__all__ = ["Estimate", "bootstrap", "bootstrap_curve", "bootstrap_decisions", "estimate", "resample_counts",
           "resample_matrix"]
