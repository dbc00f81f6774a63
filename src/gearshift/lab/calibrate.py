"""Choose a scoring router's threshold on a calibration split, then check it on a test split.

Three targets:
- StrongShare(s): the operating point with the largest strong-call share not above s.
- CostBudget(usd): the best quality whose mean cost per request is within the budget.
- QualityFloor(x): the cheapest point whose quality retained (quality / always-strong quality)
  is at least x *with confidence 1 - alpha*: its one-sided lower confidence bound must be >= x.

The quality floor is a statistical claim, so it is tested, not just read off the curve:
- bounds: "bootstrap" (percentile lower bound of quality retained, resampling prompts; any
  quality scale) or "exact" (0/1 quality only: a Clopper-Pearson upper bound on the share of
  strong-correct prompts the router loses to a wrong weak answer; quality retained >= 1 - that
  share, so the bound is exact but conservative: it gives no credit for prompts where the weak
  model is right and the strong one wrong).
- choosing among many thresholds would make the best-looking one optimistic. We use fixed-
  sequence testing: start at all-strong (retained = 1, always accepted), move one operating point
  cheaper at a time, and stop at the first point whose bound falls below x. The order is fixed by
  the scores alone, before looking at quality, so the chance that the chosen point's true
  retained quality is below x is at most alpha (exactly so for the exact bound; approximately for
  the bootstrap one), assuming calibration and test prompts come from the same distribution.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from gearshift.lab.bootstrap import resample_counts
from gearshift.lab.replay import Curve, OperatingPoint, ScoreOrder, operating_point, router_scores
from gearshift.outcomes.table import Outcomes
from gearshift.routers.base import ScoringRouter


@dataclass(frozen=True)
class StrongShare:
    """Send at most this fraction of requests to the strong model."""

    share: float


@dataclass(frozen=True)
class CostBudget:
    """Spend at most this many USD per request on average."""

    usd_per_request: float


@dataclass(frozen=True)
class QualityFloor:
    """Keep at least this fraction of the always-strong quality (e.g. 0.95)."""

    retained: float


Target = StrongShare | CostBudget | QualityFloor
Method = Literal["bootstrap", "exact"]


@dataclass(frozen=True)
class Calibration:
    """A chosen threshold, what it achieved on the calibration and test splits, and how sure we are.

    achieved_*: the targeted figure (strong share, cost per request, or quality retained).
    bound/confidence: for QualityFloor, the one-sided lower confidence bound of quality retained
    at the chosen point on the calibration split, and its confidence level 1 - alpha.
    held: on the test split, was the budget kept (CostBudget) or the floor met (QualityFloor)?
    None for StrongShare (a target, not a constraint) and when no test split was given.
    """

    target: Target
    threshold: float
    calibration: OperatingPoint
    achieved_calibration: float
    retained_calibration: float
    method: str
    test: OperatingPoint | None = None
    achieved_test: float | None = None
    retained_test: float | None = None
    bound: float | None = None
    confidence: float | None = None
    held: bool | None = None

    def summary(self) -> str:
        parts = [f"threshold {self.threshold:.6g} ({self.method})",
                 f"calibration: share {self.calibration.strong_share:.1%}, quality {self.calibration.quality:.4f}, "
                 f"retained {self.retained_calibration:.1%}, cost ${self.calibration.cost:.6f}"]
        if self.bound is not None:
            parts.append(f"lower bound of retained {self.bound:.1%} at {self.confidence:.0%} confidence")
        if self.test is not None:
            parts.append(f"test: share {self.test.strong_share:.1%}, quality {self.test.quality:.4f}, "
                         f"retained {self.retained_test:.1%}, cost ${self.test.cost:.6f}"
                         + ("" if self.held is None else f", target {'held' if self.held else 'MISSED'}"))
        return "; ".join(parts)


def _achieved(target: Target, point: OperatingPoint, retained: float) -> float:
    if isinstance(target, StrongShare):
        return point.strong_share
    if isinstance(target, CostBudget):
        return point.cost
    return retained


def _held(target: Target, point: OperatingPoint, retained: float) -> bool | None:
    if isinstance(target, CostBudget):
        return point.cost <= target.usd_per_request
    if isinstance(target, QualityFloor):
        return retained >= target.retained
    return None


def _threshold_between(curve: Curve, i: int, lower_scores: np.ndarray) -> float:
    """A threshold realising point i: midway between its lowest strong score and the next lower one,
    so unseen scores in that gap are split evenly; -inf at the all-strong end."""
    if i == len(curve) - 1:
        return -np.inf
    if i == 0:
        return np.inf
    hi = float(curve.threshold[i])
    below = lower_scores[lower_scores < hi]
    return (hi + float(below.max())) / 2 if len(below) else hi


def _bootstrap_lower(order: ScoreOrder, outcomes: Outcomes, weak: str, strong: str, alpha: float,
                     n_boot: int, seed: int) -> np.ndarray:
    chunks = [order.curve(outcomes, weak, strong, weights=w).quality for w in resample_counts(len(outcomes), n_boot, seed)]
    q = np.concatenate(chunks)  # (n_boot, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        retained = q / q[:, -1:]
    return np.asarray(np.nanquantile(retained, alpha, axis=0))


def _exact_lower(order: ScoreOrder, outcomes: Outcomes, weak: str, strong: str, alpha: float) -> np.ndarray:
    from scipy.stats import beta  # only this method needs scipy

    w, s = outcomes.index(weak), outcomes.index(strong)
    qw, qs = np.asarray(outcomes.quality[:, w], float), np.asarray(outcomes.quality[:, s], float)
    if not (np.isin(qw, (0.0, 1.0)).all() and np.isin(qs, (0.0, 1.0)).all()):
        raise ValueError("method='exact' needs 0/1 quality; use method='bootstrap'")
    # A loss: strong right, weak wrong, and the router sends the prompt weak.
    loss_sorted = ((qs == 1) & (qw == 0))[order.order].astype(float)
    n_strong_right = int((qs == 1).sum())
    n = len(loss_sorted)
    # Point i sends the first ends[i] sorted prompts strong; the rest go weak.
    losses = loss_sorted.sum() - np.concatenate([[0.0], np.cumsum(loss_sorted)])[order.ends]
    if n_strong_right == 0 or n == 0:
        return np.full(len(order.ends), np.nan)
    # One-sided Clopper-Pearson upper bound of the loss rate among strong-correct prompts.
    upper = np.where(losses >= n_strong_right, 1.0, beta.ppf(1 - alpha, losses + 1, n_strong_right - losses))
    return 1.0 - upper


def calibrate_scores(scores: np.ndarray, outcomes: Outcomes, weak: str, strong: str, target: Target, *,
                     test_scores: np.ndarray | None = None, test: Outcomes | None = None, alpha: float = 0.05,
                     method: Method = "bootstrap", n_boot: int = 1000, seed: int = 0) -> Calibration:
    """Calibrate on (scores, outcomes); evaluate on (test_scores, test) when given. See the module doc."""
    scores = np.asarray(scores, dtype=float)
    order = ScoreOrder.from_scores(scores)
    curve = order.curve(outcomes, weak, strong)
    q_strong = float(curve.quality[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        retained = curve.quality / q_strong
    bound = confidence = None
    if isinstance(target, StrongShare):
        ok = np.flatnonzero(curve.strong_share <= target.share + 1e-12)
        i = int(ok[-1])
        how = "largest share within target"
    elif isinstance(target, CostBudget):
        ok = np.flatnonzero(curve.cost <= target.usd_per_request)
        if len(ok) == 0:
            raise ValueError(f"budget ${target.usd_per_request:g}/request is below the always-weak cost "
                             f"${curve.cost[0]:.6g}/request on the calibration split")
        best = curve.quality[ok].max()
        cand = ok[curve.quality[ok] >= best]
        i = int(cand[np.argmin(curve.cost[cand])])
        how = "best quality within budget"
    elif isinstance(target, QualityFloor):
        if method == "bootstrap":
            lower = _bootstrap_lower(order, outcomes, weak, strong, alpha, n_boot, seed)
        elif method == "exact":
            lower = _exact_lower(order, outcomes, weak, strong, alpha)
        else:
            raise ValueError(f"method {method!r}: allowed: bootstrap, exact")
        lower = lower.copy()
        lower[-1] = 1.0  # all-strong keeps all of the strong quality by definition
        accepted = [len(curve) - 1]
        for j in range(len(curve) - 2, -1, -1):  # fixed sequence: cheaper one point at a time
            if not lower[j] >= target.retained:
                break
            accepted.append(j)
        acc = np.array(accepted)
        i = int(acc[np.argmin(curve.cost[acc])]) if not np.isnan(curve.cost[acc]).any() else int(acc[-1])
        bound, confidence = float(lower[i]), 1.0 - alpha
        how = f"{method} lower bound, fixed-sequence test"
    else:
        raise TypeError(f"unknown target {target!r}")
    point = curve.point(i)
    threshold = _threshold_between(curve, i, scores)
    point = OperatingPoint(threshold=threshold, strong_share=point.strong_share, quality=point.quality, cost=point.cost)
    result = Calibration(target=target, threshold=threshold, calibration=point,
                         achieved_calibration=_achieved(target, point, float(retained[i])),
                         retained_calibration=float(retained[i]), method=how, bound=bound, confidence=confidence)
    if test is None:
        return result
    if test_scores is None:
        raise ValueError("test outcomes given without test_scores")
    tp = operating_point(np.asarray(test_scores, float), test, weak, strong, threshold)
    t_strong = float(np.mean(test.quality[:, test.index(strong)]))
    t_ret = tp.quality / t_strong if t_strong else float("nan")
    return replace(result, test=tp, achieved_test=_achieved(target, tp, t_ret), retained_test=t_ret,
                   held=_held(target, tp, t_ret))


def calibrate(router: ScoringRouter, calibration: Outcomes, target: Target, test: Outcomes | None = None, *,
              alpha: float = 0.05, method: Method = "bootstrap", n_boot: int = 1000, seed: int = 0) -> Calibration:
    """Calibrate a scoring router's threshold on one split and check it on another.

    Set `router.threshold = result.threshold` to deploy it.
    """
    scores = router_scores(router, calibration)
    test_scores = router_scores(router, test) if test is not None else None
    return calibrate_scores(scores, calibration, router.weak, router.strong, target, test_scores=test_scores,
                            test=test, alpha=alpha, method=method, n_boot=n_boot, seed=seed)


def split_halves(outcomes: Outcomes, seed: int = 0, fraction: float = 0.5) -> tuple[Outcomes, Outcomes]:
    """A random (calibration, test) split of the prompts."""
    a, b = split_rows(len(outcomes), seed, fraction)
    return outcomes.subset(a), outcomes.subset(b)


def split_rows(n: int, seed: int = 0, fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The row indices of `split_halves`' two parts (sorted)."""
    perm = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * fraction))
    return np.sort(perm[:cut]), np.sort(perm[cut:])


__all__ = [
    "Calibration", "CostBudget", "QualityFloor", "StrongShare", "Target", "calibrate", "calibrate_scores", "split_halves",
    "split_rows",
]
