"""The proof that lets a scoring router serve its own decisions, on this traffic's scored shadow pairs.

Three conditions, all on the router's pairs:
- enough of them (`min_pairs`);
- a threshold calibrated to the quality floor with its one-sided lower confidence bound (lab.calibrate,
  fixed-sequence testing) on the calibration part, that sends some requests weak (a threshold that keeps
  the floor only by always calling the strong model saves nothing);
- an APGR bootstrap interval whose lower end is above 0.5, the expected APGR of a random router. By
  default on every pair (all unseen by the router's model: the gateway proves a model on the pairs that came
  after its training): APGR sweeps every threshold, so the threshold fitted on the same pairs does not bias
  it, and a held-out part would throw away most of the evidence (`held_out` > 0 keeps one apart).

An observing router is checked again as its pairs grow: `look` makes the k-th check need more confidence
(look_confidence), so that all its checks together promote a router without signal at most at 1 - confidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gearshift.lab.bootstrap import Estimate
from gearshift.lab.calibrate import Calibration, QualityFloor, calibrate_scores, split_rows
from gearshift.lab.replay import router_scores
from gearshift.lab.signal import Signal, signal
from gearshift.outcomes.table import Outcomes
from gearshift.routers.base import ScoringRouter


@dataclass(frozen=True)
class Proof:
    """The outcome of `prove`; `reason` is the one line shown in logs, /health and the CLI."""

    ok: bool
    pairs: int
    min_pairs: int
    floor: float
    confidence: float
    reason: str
    calibration: Calibration | None = None  # the threshold fitted to the floor on the calibration part
    signal: Signal | None = None  # APGR on the held-out pairs (lab.signal: the same check as the lab's)
    # The weak answers' grades count every disagreement as a loss (no disagreement resolved): the
    # quality bound is a lower bound, and the threshold conservative.
    lower_bound: bool = False

    @property
    def threshold(self) -> float | None:
        return self.calibration.threshold if self.calibration is not None else None

    @property
    def bound(self) -> float | None:
        """The lower confidence bound of quality retained at that threshold."""
        return self.calibration.bound if self.calibration is not None else None

    @property
    def strong_share(self) -> float | None:
        return self.calibration.calibration.strong_share if self.calibration is not None else None

    @property
    def apgr(self) -> Estimate | None:
        return self.signal.apgr if self.signal is not None else None

    @property
    def held_out(self) -> int:
        return self.signal.pairs if self.signal is not None else 0

    @property
    def state(self) -> str:
        if self.ok:
            return "proven"
        return "observing" if self.pairs < self.min_pairs else "no_signal"

    def metrics(self) -> dict[str, Any]:
        """JSON-safe figures to store with a router version."""
        out = {k: v for k, v in asdict(self).items() if k not in ("signal", "calibration")}
        out.update(threshold=self.threshold, bound=self.bound, strong_share=self.strong_share, held_out=self.held_out)
        if self.apgr is not None:
            out["apgr"] = {"value": self.apgr.value, "low": self.apgr.low, "high": self.apgr.high}
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


def look_confidence(confidence: float, look: int) -> float:
    """The confidence of a router's `look`-th proof: look k may err at rate alpha / (k (k + 1)).

    A gateway checks an observing router again as its pairs grow, and each check is a test
    that can pass by chance: at the plain rate, a router with no signal is promoted sooner or later.
    These rates add up to alpha over every look, so all of them together err at most at alpha."""
    if look < 1:
        raise ValueError(f"look {look}: looks count from 1")
    return 1 - (1 - confidence) / (look * (look + 1))


def prove(pairs: Outcomes, router: ScoringRouter, floor: float, min_pairs: int = 500, confidence: float = 0.95,
          held_out: float = 0.0, seed: int = 0, n_boot: int = 1000, look: int | None = None) -> Proof:
    """Whether `router`'s scores on `pairs` (weak and strong answers both scored) earn it the right to serve.

    `look`: which check of this router this is (1, 2, ...), for the confidence each one needs
    (look_confidence); None for a single check at `confidence`."""
    if len(pairs) < min_pairs:
        return prove_scores(np.zeros(0), pairs, router.weak, router.strong, floor, min_pairs, confidence)
    return prove_scores(router_scores(router, pairs), pairs, router.weak, router.strong, floor, min_pairs,
                        confidence, held_out, seed, n_boot, look)


def prove_scores(scores: np.ndarray, pairs: Outcomes, weak: str, strong: str, floor: float, min_pairs: int = 500,
                 confidence: float = 0.95, held_out: float = 0.0, seed: int = 0, n_boot: int = 1000,
                 look: int | None = None) -> Proof:
    """`prove` on a router's scores of `pairs` (for routers not built from a config, e.g. in benchmarks)."""
    n = len(pairs)
    asked = confidence
    if look is not None:
        confidence = look_confidence(confidence, look)
    lower = pairs.pair_estimate is not None and pairs.pair_estimate.lower_bound
    base: dict[str, Any] = {"pairs": n, "min_pairs": min_pairs, "floor": floor, "confidence": confidence,
                            "lower_bound": lower}
    if n < min_pairs:
        return Proof(ok=False, reason=f"observing: {n}/{min_pairs} pairs", **base)
    if held_out > 0:
        rows_cal, rows_test = split_rows(n, seed=seed, fraction=1 - held_out)
    else:  # APGR sweeps every threshold: the threshold fitted on the same pairs does not bias it
        rows_cal = rows_test = np.arange(n)
    cal, test = pairs.subset(rows_cal), pairs.subset(rows_test)
    cal_scores, test_scores = np.asarray(scores, float)[rows_cal], np.asarray(scores, float)[rows_test]
    c = calibrate_scores(cal_scores, cal, weak, strong, QualityFloor(floor),
                         alpha=1 - confidence, n_boot=n_boot, seed=seed)
    # "Beats random" is one-sided: the lower end of the two-sided interval at 1 - 2 alpha is the one-sided bound at
    # 1 - alpha (the two-sided one at 1 - alpha would test at alpha / 2 and spend half the power for nothing).
    sig = signal(test_scores, test, weak, strong, n_boot=n_boot, seed=seed, alpha=2 * (1 - confidence))
    est = sig.apgr
    base.update(calibration=c, signal=sig)
    apgr_line = f"APGR {est.value:.2f} [{est.low:.2f}, {est.high:.2f}]"
    note = f"; {_LOWER}" if lower else ""
    if not sig.has_signal:
        return Proof(ok=False, reason=f"no signal yet: {apgr_line}{note}", **base)
    if c.threshold == -np.inf or c.calibration.strong_share >= 1.0:
        return Proof(ok=False, reason=f"no savings yet: the {floor:.0%} floor needs the strong model on every "
                                      f"request ({apgr_line}){note}", **base)
    at = f"{confidence:.2%} confidence (check {look}: {asked:.0%} over every check)" if look is not None \
        else f"{confidence:.0%} confidence"
    return Proof(ok=True, reason=f"proven: threshold {c.threshold:.3f}, retained >= {c.bound:.1%} at {at}, strong "
                                 f"share {c.calibration.strong_share:.0%}, {apgr_line} on {len(test)} "
                                 f"{'held-out ' if held_out > 0 else ''}pairs{note}", **base)


_LOWER = "quality from agreement alone, a lower bound (no disagreement resolved; see shadow.resolve)"


__all__ = ["Proof", "look_confidence", "prove", "prove_scores"]
