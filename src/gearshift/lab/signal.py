"""Is there a signal? APGR with its bootstrap interval on pairs training did not see, against random.

The expected random router's APGR is 0.5 by definition (its PGR rises linearly with the strong-call
share). A router whose APGR interval reaches 0.5 cannot be told apart from random on this traffic:
it saves nothing a coin would not, so nothing may promote it automatically. One check, used by
`lab train`, `lab retrain`, `lab recalibrate` and `lab calibrate`.

`random_p_value` is the test a proof decides on: the exact permutation test of "the scores say nothing
about which prompts gain from the strong model" (the random router's hypothesis), where the bootstrap
interval only approximates its level (measured in benchmarks/proof_power.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gearshift.lab.bootstrap import Estimate
from gearshift.outcomes.table import Outcomes

RANDOM_APGR = 0.5


@dataclass(frozen=True)
class Signal:
    """APGR (with its interval) on `pairs` held-out pairs; `has_signal` when the interval excludes random."""

    apgr: Estimate
    pairs: int

    @property
    def has_signal(self) -> bool:
        # NaN (no quality gap between the models, so no PGR at all) is no signal either.
        return bool(self.apgr.low > RANDOM_APGR)

    def figures(self) -> str:
        """E.g. 'APGR 0.612 [0.561, 0.660] on 300 held-out pairs (random 0.5)'."""
        return f"APGR {self.apgr} on {self.pairs} held-out pairs (random {RANDOM_APGR})"

    def line(self) -> str:
        """The one plain line said when there is no signal ('' when there is one)."""
        if self.has_signal:
            return ""
        a = self.apgr
        if self.pairs == 0:
            return "no signal: no held-out pairs to measure APGR on; this router should not serve this traffic"
        return (f"no signal: APGR {a.value:.2f} [{a.low:.2f}, {a.high:.2f}] on {self.pairs} held-out pairs includes "
                f"random ({RANDOM_APGR}); this router should not serve this traffic")

    def to_json(self) -> dict[str, Any]:
        a = self.apgr
        return {"apgr": a.value, "low": a.low, "high": a.high, "pairs": self.pairs, "has_signal": self.has_signal}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Signal:
        return cls(Estimate(float(d["apgr"]), float(d["low"]), float(d["high"])), int(d["pairs"]))


def signal(scores: np.ndarray, outcomes: Outcomes, weak: str, strong: str, n_boot: int = 200, seed: int = 0,
           alpha: float = 0.05) -> Signal:
    """The signal of a router's scores on held-out `outcomes` (pairs of weak and strong answers)."""
    from gearshift.lab import metrics
    from gearshift.lab.bootstrap import bootstrap_curve

    if len(outcomes) == 0:
        return Signal(Estimate(math.nan, math.nan, math.nan, alpha), 0)
    est = bootstrap_curve(np.asarray(scores, float), outcomes, weak, strong, {"apgr": metrics.apgr}, n=n_boot,
                          seed=seed, alpha=alpha)
    return Signal(est["apgr"], len(outcomes))


# Permutations reaching the observed APGR after which the test stops (its p-value is then at least
# STOP_AFTER / n_perm, far above any level a proof asks for).
STOP_AFTER = 20


def random_p_value(scores: np.ndarray, outcomes: Outcomes, weak: str, strong: str, n_perm: int = 10_000,
                   seed: int = 0, groups: np.ndarray | None = None) -> float:
    """The chance that scores unrelated to the outcomes reach this APGR or more: a one-sided permutation test.

    APGR is linear in the strong model's per-prompt gains once the prompts are ranked by score (a prompt at
    descending mid-rank r weighs n - r + 1/2; ties share their weight, as the curve joins tied prompts), so
    each permutation of the gains over the ranks is one dot product. The p-value counts the observed
    ranking as one of the permutations, so it is valid at any level, for any n (no normal approximation). It
    stops early once STOP_AFTER permutations reach the observed APGR (a sequential test, as valid).

    `groups`: a stratified test, for scores from one model per group (a cross-fit's folds): each group's
    prompts are ranked among themselves (APGR's weights within the group), the statistic is the sum over groups,
    and the gains are permuted only within each group."""
    from scipy.stats import rankdata  # only this test needs scipy

    s = np.asarray(scores, float)
    w, st = outcomes.index(weak), outcomes.index(strong)
    q = np.asarray(outcomes.quality, float)
    gain = q[:, st] - q[:, w]
    n = len(gain)
    if n == 0 or not gain.sum() > 0:  # no pairs, or the strong model gains nothing: no PGR to beat
        return 1.0
    if groups is None:
        weight = n - rankdata(-s) + 0.5  # rankdata: mid-ranks of the descending scores, 1-based
    else:
        groups = np.asarray(groups)
        weight = np.zeros(n)
        for g in np.unique(groups):
            at = np.flatnonzero(groups == g)
            weight[at] = len(at) - rankdata(-s[at]) + 0.5
    observed = float(gain @ weight)
    rng = np.random.default_rng(seed)
    cap = max(1, 2_000_000 // n)  # rows per batch: bounded memory
    above = done = 0
    size = min(256, cap)
    while done < n_perm:
        perms = _permuted(rng, gain, min(size, n_perm - done), groups)
        hits = np.flatnonzero(perms @ weight >= observed - 1e-9 * abs(observed))
        if above + len(hits) >= STOP_AFTER:
            # Besag and Clifford's sequential test: stop at the STOP_AFTER-th permutation that reaches the
            # observed APGR; STOP_AFTER / permutations drawn is a valid p-value, and a ranking with no signal
            # is told apart after a few dozen permutations instead of all of them.
            return STOP_AFTER / (done + int(hits[STOP_AFTER - above - 1]) + 1)
        above += len(hits)
        done += len(perms)
        size = min(2 * size, cap)
    return (1 + above) / (1 + n_perm)


def _permuted(rng: np.random.Generator, gain: np.ndarray, rows: int, groups: np.ndarray | None) -> np.ndarray:
    """`rows` permutations of `gain`, each within `groups` when given."""
    if groups is None:
        return rng.permuted(np.broadcast_to(gain, (rows, len(gain))), axis=1)
    perms = np.empty((rows, len(gain)))
    for g in np.unique(groups):
        at = np.flatnonzero(groups == g)
        perms[:, at] = rng.permuted(np.broadcast_to(gain[at], (rows, len(at))), axis=1)
    return perms


__all__ = ["RANDOM_APGR", "Signal", "random_p_value", "signal"]
