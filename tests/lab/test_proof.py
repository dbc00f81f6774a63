"""lab/proof.prove on recorded GSM8K answers (Mixtral-8x7B vs GPT-4-1106): a score that knows which
prompts need GPT-4 is proven, a random one is not, and too few pairs keep the router observing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from gearshift.lab.proof import LEARNER_SHARE, look_at, look_confidence, looks_due, prove, prove_scores
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W
from gearshift.outcomes.datasets import load
from gearshift.request import ChatRequest
from gearshift.routers.base import Options, ProofOptions, ScoringRouter


class Table(ScoringRouter[Options]):
    """Scores looked up by prompt text (what a trained router would compute)."""

    kind = "table"

    def __init__(self, scores: dict[str, float]) -> None:
        super().__init__("t", Options())
        self.weak, self.strong, self.threshold, self.table = W, S, 0.5, scores

    def score(self, request: ChatRequest) -> float:
        return self.table[request.text()]

    def scores(self, requests: Sequence[ChatRequest]) -> np.ndarray:
        return np.array([self.score(r) for r in requests])


@pytest.fixture(scope="module")
def pairs(data_dir: Path):  # type: ignore[no-untyped-def]
    o = load("routellm/gsm8k")
    return o.subset(np.arange(400))


def _router(pairs, scores: np.ndarray) -> Table:  # type: ignore[no-untyped-def]
    return Table({str(p): float(s) for p, s in zip(pairs.prompts, scores, strict=True)})


def test_an_informative_score_is_proven(pairs) -> None:  # type: ignore[no-untyped-def]
    q = pairs.quality
    # The strong model's gain on the prompt, blurred: a good but imperfect router.
    gain = q[:, pairs.index(S)] - q[:, pairs.index(W)]
    scores = gain + np.random.default_rng(0).normal(0, 0.3, len(pairs))
    p = prove(pairs, _router(pairs, scores), floor=0.95, min_pairs=300)
    assert p.ok and p.state == "proven", p.reason
    assert p.bound is not None and p.bound >= 0.95
    assert p.apgr is not None and p.apgr.low > 0.5
    assert p.held_out == p.pairs == 400  # APGR on every pair (none trained on), not on a held-out part
    assert prove(pairs, _router(pairs, scores), floor=0.95, min_pairs=300, held_out=0.3).held_out == 120
    assert p.strong_share is not None and p.strong_share < 1
    assert p.reason.startswith("proven: threshold")
    assert p.metrics()["apgr"]["low"] == p.apgr.low


def test_a_random_score_has_no_signal(pairs) -> None:  # type: ignore[no-untyped-def]
    p = prove(pairs, _router(pairs, np.random.default_rng(1).random(len(pairs))), floor=0.95, min_pairs=300)
    assert not p.ok and p.state == "no_signal"
    assert p.apgr is not None and p.apgr.low <= 0.5  # this draw even falls below random
    assert p.reason == (f"no signal yet: APGR {p.apgr.value:.2f} [{p.apgr.low:.2f}, {p.apgr.high:.2f}], "
                        f"p {p.p_value:.2g} against random")
    assert p.p_value is not None and p.p_value > 0.05


def test_too_few_pairs_keep_observing(pairs) -> None:  # type: ignore[no-untyped-def]
    p = prove(pairs.subset(np.arange(312)), _router(pairs, np.zeros(len(pairs))), floor=0.95, min_pairs=500)
    assert not p.ok and p.state == "observing" and p.reason == "observing: 312/500 pairs"
    assert p.apgr is None and p.threshold is None


def test_a_proof_on_agreement_alone_says_it_is_a_lower_bound(pairs) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from gearshift.store.view import PairEstimate

    q = pairs.quality
    scores = q[:, pairs.index(S)] - q[:, pairs.index(W)] + np.random.default_rng(0).normal(0, 0.3, len(pairs))
    lower = replace(pairs, pair_estimate=PairEstimate(pairs=400, passed=240, disagreed=160))
    p = prove(lower, _router(pairs, scores), floor=0.95, min_pairs=300)
    assert p.lower_bound and p.reason.endswith("a lower bound (no disagreement resolved; see shadow.resolve)")
    assert p.metrics()["lower_bound"] is True
    resolved = replace(pairs, pair_estimate=PairEstimate(pairs=400, passed=240, disagreed=160, resolved=30,
                                                         resolved_weak=5, resolved_reference=20))
    p = prove(resolved, _router(pairs, scores), floor=0.95, min_pairs=300)
    assert not p.lower_bound and "lower bound" not in p.reason


def test_each_later_check_needs_more_confidence_and_all_of_them_err_at_most_alpha() -> None:
    rates = [1 - look_confidence(0.95, k) for k in range(1, 10_001)]
    assert rates == sorted(rates, reverse=True) and rates[0] == pytest.approx(0.025)
    assert sum(rates) < 0.05  # every check of a router without signal together: at most 5% promote it
    with pytest.raises(ValueError, match="count from 1"):
        look_confidence(0.95, 0)


def test_a_weak_score_proven_by_one_check_is_not_proven_by_a_tenth(pairs) -> None:  # type: ignore[no-untyped-def]
    q = pairs.quality
    gain = q[:, pairs.index(S)] - q[:, pairs.index(W)]
    router = _router(pairs, gain + np.random.default_rng(3).normal(0, 6.0, len(pairs)))  # a faint signal
    once = prove(pairs, router, floor=0.95, min_pairs=300)
    assert once.ok, once.reason
    tenth = prove(pairs, router, floor=0.95, min_pairs=300, look=10)
    assert not tenth.ok and tenth.state == "no_signal", tenth.reason
    first = prove(pairs, _router(pairs, gain + np.random.default_rng(0).normal(0, 0.3, len(pairs))), floor=0.95,
                  min_pairs=300, look=1)
    # "Beats random" is one-sided: the interval shown is two-sided at 1 - 2 alpha, its low end the bound at 1 - alpha
    assert first.apgr is not None and first.apgr.alpha == pytest.approx(2 * (1 - look_confidence(0.95, 1)))
    assert first.ok and "97.50% confidence (check 1: 95% over every check)" in first.reason


def test_a_retraining_router_splits_alpha_half_and_half_between_its_model_and_its_learner() -> None:
    """What the docs say: with `retrain`, the configured model's checks and the learner's cross-fit checks each
    hold LEARNER_SHARE = half of alpha; check k of either errs at alpha / 2 / (k (k+1)), all together <= alpha."""
    assert LEARNER_SHARE == 0.5
    assert "half" in ProofOptions.model_fields["retrain"].description  # type: ignore[operator]
    shares = (1 - LEARNER_SHARE, LEARNER_SHARE)
    rates = [1 - look_confidence(0.99, k, s) for k in range(1, 10_001) for s in shares]
    assert sum(rates) < 0.01 and 1 - look_confidence(0.99, 1, 0.5) == pytest.approx(0.01 / 2 / 2)
    assert 1 - look_confidence(0.99, 3, 0.5) == pytest.approx(0.01 / 2 / 12)
    with pytest.raises(ValueError, match="share is in"):
        look_confidence(0.99, 1, 0)


def test_which_check_is_due_is_derived_from_the_pairs_alone() -> None:
    # min_pairs 200, growth 1.5: checks on the first 200, 300, 450, 675 pairs
    assert [look_at(200, 1.5, k) for k in (1, 2, 3, 4)] == [200, 300, 450, 675]
    assert [looks_due(n, 200, 1.5) for n in (0, 199, 200, 299, 300, 674, 675)] == [0, 0, 1, 1, 2, 3, 4]


def test_no_placebo_draw_is_promoted(pairs) -> None:  # type: ignore[no-untyped-def]
    """Shuffled qualities (nothing to learn): the first three checks of 8 draws at signal confidence 0.99."""
    q = np.asarray(pairs.quality)
    gain = q[:, pairs.index(S)] - q[:, pairs.index(W)]
    promoted = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        placebo = pairs.subset(np.arange(len(pairs)))
        placebo.quality[:] = q[rng.permutation(len(pairs))]
        scores = gain + rng.normal(0, 0.3, len(pairs))  # a router fitted to the unshuffled outcomes
        for look, n in ((1, 200), (2, 300), (3, 400)):
            p = prove_scores(scores[:n], placebo.subset(np.arange(n)), W, S, 0.95, 200, look=look,
                             signal_confidence=0.99, n_boot=200, seed=seed)
            promoted += p.ok
            assert p.signal_confidence == pytest.approx(look_confidence(0.99, look))
    assert promoted == 0


def test_a_threshold_calibrated_on_cross_fit_scores_is_bounded_at_half_the_alpha(pairs) -> None:  # type: ignore[no-untyped-def]
    """Cross-fit scores stand for a refitted model's (CV+), whose guarantee is 1 - 2 alpha: the floor's bound is
    taken at alpha / 2, so it is never above the one the same scores get as a model's own."""
    q = pairs.quality
    gain = q[:, pairs.index(S)] - q[:, pairs.index(W)]
    scores = gain + np.random.default_rng(0).normal(0, 0.3, len(pairs))
    own = prove_scores(scores, pairs, W, S, floor=0.95, min_pairs=300, look=1)
    cross = prove_scores(scores, pairs, W, S, floor=0.95, min_pairs=300, look=1, calibrate_on=(scores, pairs))
    assert own.confidence == pytest.approx(look_confidence(0.95, 1)) == pytest.approx(0.975)
    assert cross.confidence == pytest.approx(1 - (1 - 0.975) / 2)
    assert own.ok and cross.ok, (own.reason, cross.reason)
    assert cross.calibration is not None and own.calibration is not None
    assert cross.calibration.bound is not None and own.calibration.bound is not None
    # The same scores, a stricter bound: the strong model on at least as many requests.
    assert cross.calibration.threshold <= own.calibration.threshold
    assert cross.calibration.calibration.strong_share >= own.calibration.calibration.strong_share
    assert cross.calibration.confidence == pytest.approx(0.9875)
    assert "98.75% confidence (check 1" in cross.reason
