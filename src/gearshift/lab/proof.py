"""The proof that lets a scoring router serve its own decisions, on this traffic's scored shadow pairs.

Three conditions, all on the router's pairs:
- enough of them (`min_pairs`);
- a threshold calibrated to the quality floor with its one-sided lower confidence bound (lab.calibrate,
  fixed-sequence testing) at `confidence`, that sends some requests weak (a threshold that keeps the floor
  only by always calling the strong model saves nothing);
- it beats random: the exact permutation test of "its scores say nothing about which prompts gain from the
  strong model" (lab.signal.random_p_value) rejects at 1 - `signal_confidence`. Serving is the act a false
  signal makes irreversible for users, so the gateway asks more here (0.99) than of the floor's bound. The
  APGR bootstrap interval is shown beside it. The test and the calibration use every pair by default,
  where the issue's first wording said "a held-out part": every pair is unseen by the router's model (the
  gateway proves a model on the pairs that came after its training), APGR sweeps every threshold so the
  threshold fitted on the same pairs does not bias it, and the permutation test is exact on any pairs the
  scores did not see. A held-out 30% keeps the level and throws away the power: on 300 GSM8K pairs scored by
  a router trained on other GSM8K prompts, over 80 draws, the test at one-sided 2.5% promoted 2.5% of placebo
  draws (qualities shuffled) on every pair and 1.2% on a held-out 30%, and 98.8% of the draws with signal on
  every pair against 38.8% on the held-out part (at 0.5%: 0% and 0% placebo, 93.8% and 20.0% power;
  benchmarks/proof_power.py, which also shows the bootstrap interval's figures). `held_out` > 0
  still keeps a part apart.

A serving router is re-checked on the pairs since it began serving, and demoted only on evidence against its
proof (`recheck`: the floor broken, or APGR at or below random); "no signal yet" there is not a failure.

An observing router is checked again as its pairs grow: the k-th check needs more confidence
(look_confidence), so that all its checks together promote a router without signal at most at
1 - signal_confidence. A router that may be refitted (`proof.retrain`) makes two kinds of check at each look,
and alpha is split between them, LEARNER_SHARE each (Bonferroni over two hypotheses, neither favoured: whether
the configured model transfers to this traffic is as unknown as whether this traffic can teach the learner):
its configured model on the pairs it never saw, and its training procedure (the learner) by a chained K-fold
cross-fit on every pair so far (lab.retrain.prove_learner).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gearshift.lab.bootstrap import Estimate
from gearshift.lab.calibrate import Calibration, QualityFloor, calibrate_scores, split_rows
from gearshift.lab.replay import router_scores
from gearshift.lab.signal import Signal, random_p_value, signal
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
    p_value: float | None = None  # the permutation test against random (lab.signal.random_p_value)
    signal_confidence: float | None = None  # the level that test had to reach at this check
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


# The share of a retraining router's alpha its learner's cross-fit checks hold; its configured model's checks
# hold the rest (see the module's docstring).
LEARNER_SHARE = 0.5


def look_confidence(confidence: float, look: int, share: float = 1.0) -> float:
    """The confidence of check k = `look` of a sequence of checks holding `share` of alpha: it may err at
    share * alpha / (k (k+1)).

    A gateway checks an observing router again as its pairs grow: each check is a test that can pass by
    chance, so at the plain rate a router with no signal is promoted sooner or later. These rates add up to
    share * alpha over every look, so the sequences of a router (its configured model's, its learner's: shares
    adding up to 1) together err at most at alpha."""
    if look < 1 or not 0 < share <= 1:
        raise ValueError(f"look {look}, share {share}: looks count from 1, a share is in (0, 1]")
    return 1 - (1 - confidence) * share / (look * (look + 1))


def look_at(min_pairs: int, growth: float, look: int) -> int:
    """How many of a model's unseen pairs its `look`-th check reads: min_pairs, then growing by `growth`.

    Derived, not counted: a restarted gateway (or another replica) makes the same check on the same pairs,
    so no check is repeated on other data, and the number of checks grows like log(pairs)."""
    return math.ceil(min_pairs * growth ** (look - 1) - 1e-9)


def looks_due(pairs: int, min_pairs: int, growth: float) -> int:
    """The last check due with `pairs` unseen pairs (0 before `min_pairs`)."""
    k = 0
    while look_at(min_pairs, growth, k + 1) <= pairs:
        k += 1
    return k


def prove(pairs: Outcomes, router: ScoringRouter, floor: float, min_pairs: int = 500, confidence: float = 0.95,
          held_out: float = 0.0, seed: int = 0, n_boot: int = 1000, look: int | None = None,
          signal_confidence: float | None = None, share: float = 1.0) -> Proof:
    """Whether `router`'s scores on `pairs` (weak and strong answers both scored) earn it the right to serve.

    `look`: which check this is (1, 2, ...), for the confidence each one needs (look_confidence), of a
    sequence holding `share` of alpha; None for a single check. `signal_confidence`: the level of the test
    against random (default `confidence`)."""
    if len(pairs) < min_pairs:
        return prove_scores(np.zeros(0), pairs, router.weak, router.strong, floor, min_pairs, confidence)
    return prove_scores(router_scores(router, pairs), pairs, router.weak, router.strong, floor, min_pairs,
                        confidence, held_out, seed, n_boot, look, signal_confidence, share)


def prove_scores(scores: np.ndarray, pairs: Outcomes, weak: str, strong: str, floor: float, min_pairs: int = 500,
                 confidence: float = 0.95, held_out: float = 0.0, seed: int = 0, n_boot: int = 1000,
                 look: int | None = None, signal_confidence: float | None = None, share: float = 1.0,
                 groups: np.ndarray | None = None, calibrate_on: tuple[np.ndarray, Outcomes] | None = None) -> Proof:
    """`prove` on a router's scores of `pairs` (for routers not built from a config, e.g. in benchmarks, and for
    a learner's out-of-fold scores). `groups`: the permutation test is stratified by them (a cross-fit's folds);
    `calibrate_on`: (scores, pairs) to calibrate the floor's threshold on instead (lab.retrain.prove_learner)."""
    n = len(pairs)
    asked = confidence
    sig_level = confidence if signal_confidence is None else signal_confidence
    if look is not None:
        confidence = look_confidence(confidence, look, share)
        sig_level = look_confidence(sig_level, look, share)
    if calibrate_on is not None:
        # Out-of-fold scores stand for the refitted model's: CV+ guarantees 1 - 2 alpha, not 1 - alpha (Barber et
        # al. 2021), so the floor's bound is taken at alpha / 2 for the confidence asked to hold.
        confidence = 1 - (1 - confidence) / 2
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
    if calibrate_on is not None:
        cal_scores, cal = np.asarray(calibrate_on[0], float), calibrate_on[1]
    c = calibrate_scores(cal_scores, cal, weak, strong, QualityFloor(floor),
                         alpha=1 - confidence, n_boot=n_boot, seed=seed)
    # "Beats random" is one-sided: the lower end of the two-sided interval at 1 - 2 alpha is the one-sided bound at
    # 1 - alpha (the two-sided one at 1 - alpha would test at alpha / 2 and spend half the power for nothing).
    sig = signal(test_scores, test, weak, strong, n_boot=n_boot, seed=seed, alpha=2 * (1 - sig_level))
    # The decision is the exact test; its resolution (1 / (n_perm + 1)) stays below the level it must reach.
    n_perm = max(10_000, math.ceil(20 / (1 - sig_level)))
    p = random_p_value(test_scores, test, weak, strong, n_perm=n_perm, seed=seed,
                       groups=None if groups is None else np.asarray(groups)[rows_test])
    est = sig.apgr
    base.update(calibration=c, signal=sig, p_value=p, signal_confidence=sig_level)
    apgr_line = f"APGR {est.value:.2f} [{est.low:.2f}, {est.high:.2f}], p {p:.2g} against random"
    note = f"; {_LOWER}" if lower else ""
    if not p <= 1 - sig_level:
        return Proof(ok=False, reason=f"no signal yet: {apgr_line}{note}", **base)
    if c.threshold == -np.inf or c.calibration.strong_share >= 1.0:
        return Proof(ok=False, reason=f"no savings yet: the {floor:.0%} floor needs the strong model on every "
                                      f"request ({apgr_line}){note}", **base)
    at = f"{confidence:.2%} confidence (check {look}{f', {share:.0%} of alpha' if share < 1 else ''}: {asked:.0%} " \
         f"over every check)" if look is not None else f"{confidence:.0%} confidence"
    return Proof(ok=True, reason=f"proven: threshold {c.threshold:.3f}, retained >= {c.bound:.1%} at {at}, strong "
                                 f"share {c.calibration.strong_share:.0%}, {apgr_line} on {len(test)} "
                                 f"{'held-out ' if held_out > 0 else ''}pairs{note}", **base)


def recheck(scores: np.ndarray, pairs: Outcomes, weak: str, strong: str, threshold: float, floor: float,
            confidence: float = 0.95, n_boot: int = 1000, seed: int = 0) -> tuple[bool, str]:
    """Whether a serving router's pairs show that its proof no longer holds (a failed re-check), and why.

    A router earned serving by proving signal; it loses it on evidence against that proof, not for lack of
    new proof: the quality retained at its served threshold is below the floor with `confidence` (the
    upper confidence bound under the floor), or its APGR is at or below random with `confidence` (the
    interval's upper end at most 0.5). An interval that merely still holds 0.5 says "no signal yet", which
    is no evidence that serving broke anything: the router keeps serving, and the watch keeps looking."""
    from gearshift.lab.bootstrap import resample_counts
    from gearshift.lab.signal import RANDOM_APGR

    s = np.asarray(scores, float)
    q = np.asarray(pairs.quality, float)
    qw, qs = q[:, pairs.index(weak)], q[:, pairs.index(strong)]
    served = np.where(s >= threshold, qs, qw)
    retained = float(served.sum() / qs.sum()) if qs.sum() else float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.concatenate([(w @ served) / (w @ qs) for w in resample_counts(len(s), n_boot, seed)])
    upper = float(np.nanquantile(boot, confidence)) if np.isfinite(boot).any() else float("nan")
    sig = signal(s, pairs, weak, strong, n_boot=n_boot, seed=seed, alpha=2 * (1 - confidence))
    a = sig.apgr
    figures = (f"retained {retained:.1%} (at most {upper:.1%}), APGR {a.value:.2f} [{a.low:.2f}, {a.high:.2f}] "
               f"on {len(s)} pairs since it began serving")
    if upper < floor:
        return True, f"floor broken: {figures}, below the {floor:.0%} floor at {confidence:.0%} confidence"
    if a.high <= RANDOM_APGR:
        return True, f"worse than random: {figures}"
    return False, f"re-check holds: {figures}"


_LOWER = "quality from agreement alone, a lower bound (no disagreement resolved; see shadow.resolve)"


__all__ = ["LEARNER_SHARE", "Proof", "look_at", "look_confidence", "looks_due", "prove", "prove_scores", "recheck"]
