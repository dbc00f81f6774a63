"""Threshold calibration: share, budget and quality-floor targets, on synthetic and real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gearshift.lab.calibrate import (
    Calibration,
    CostBudget,
    QualityFloor,
    StrongShare,
    calibrate,
    calibrate_scores,
    split_halves,
)
from gearshift.lab.replay import operating_point, requests, router_scores
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W
from gearshift.outcomes.datasets import load
from gearshift.outcomes.table import Outcomes
from gearshift.request import ChatRequest
from gearshift.routers.base import ScoringRouter
from gearshift.routers.random import RandomOptions, RandomRouter


def synthetic(n: int, seed: int) -> tuple[np.ndarray, Outcomes]:
    """Scores uniform in [0, 1); the strong model is always right; the weak one fails exactly when
    score >= 0.8. So routing strong at threshold t keeps 1 - max(0, t - 0.8) of the quality."""
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    qw = (scores < 0.8).astype(float)
    o = Outcomes(prompts=np.array([f"p{i}" for i in range(n)], dtype=object), models=["weak", "strong"],
                 quality=np.stack([qw, np.ones(n)], axis=1), cost=np.stack([np.full(n, 1.0), np.full(n, 10.0)], axis=1))
    return scores, o


@pytest.mark.parametrize("method", ["bootstrap", "exact"])
def test_quality_floor_holds_on_test_in_a_case_with_a_known_answer(method: str) -> None:
    cal_scores, cal = synthetic(4000, seed=1)
    test_scores, test = synthetic(4000, seed=2)
    r = calibrate_scores(cal_scores, cal, "weak", "strong", QualityFloor(0.99), test_scores=test_scores, test=test,
                         method=method, n_boot=500)
    # True retained at threshold t is 1 - (t - 0.8) for t > 0.8: the floor allows t up to 0.81.
    assert 0.78 < r.threshold <= 0.81
    assert r.held is True and r.retained_test >= 0.99
    assert r.confidence == 0.95 and r.bound is not None
    assert 0.99 <= r.bound <= r.retained_calibration
    assert r.achieved_calibration == r.retained_calibration and r.achieved_test == r.retained_test
    # The cheapest safe point sends roughly the 20% of prompts the weak model fails on, not more.
    assert 0.18 < r.test.strong_share < 0.24


def test_floor_is_conservative_with_few_prompts() -> None:
    cal_scores, cal = synthetic(200, seed=3)
    big = calibrate_scores(*synthetic(4000, seed=3), "weak", "strong", QualityFloor(0.99), method="exact")
    few = calibrate_scores(cal_scores, cal, "weak", "strong", QualityFloor(0.99), method="exact")
    assert few.calibration.strong_share >= big.calibration.strong_share  # less data, less risk taken


def test_share_and_budget_targets_on_synthetic_data() -> None:
    scores, o = synthetic(1000, seed=4)
    test_scores, test = synthetic(1000, seed=5)
    r = calibrate_scores(scores, o, "weak", "strong", StrongShare(0.25), test_scores=test_scores, test=test)
    assert r.achieved_calibration <= 0.25 and r.achieved_calibration == pytest.approx(0.25, abs=0.002)
    assert r.held is None and r.bound is None
    assert r.achieved_test == pytest.approx(0.25, abs=0.05)
    b = calibrate_scores(scores, o, "weak", "strong", CostBudget(3.0), test_scores=test_scores, test=test)
    assert b.calibration.cost <= 3.0 and b.calibration.cost > 2.9  # spends close to the budget
    assert b.held == (b.test.cost <= 3.0)
    with pytest.raises(ValueError, match="below the always-weak cost"):
        calibrate_scores(scores, o, "weak", "strong", CostBudget(0.5))


def test_threshold_reproduces_the_calibration_point() -> None:
    scores, o = synthetic(500, seed=6)
    for target in (StrongShare(0.4), CostBudget(4.0), QualityFloor(0.97)):
        r = calibrate_scores(scores, o, "weak", "strong", target, n_boot=200)
        p = operating_point(scores, o, "weak", "strong", r.threshold)
        assert (p.strong_share, p.quality, p.cost) == pytest.approx(
            (r.calibration.strong_share, r.calibration.quality, r.calibration.cost))


def test_exact_method_needs_binary_quality() -> None:
    scores, o = synthetic(50, seed=7)
    o.quality[0, 0] = 0.5
    with pytest.raises(ValueError, match="0/1 quality"):
        calibrate_scores(scores, o, "weak", "strong", QualityFloor(0.9), method="exact")


def coherent(r: Calibration, cal: Outcomes, test: Outcomes, floor: float | None = None) -> None:
    for p in (r.calibration, r.test):
        assert p is not None
        assert 0 <= p.strong_share <= 1 and 0 <= p.quality <= 1 and p.cost > 0
    assert r.retained_calibration == pytest.approx(r.calibration.quality / cal.quality[:, cal.index(S)].mean())
    assert r.retained_test == pytest.approx(r.test.quality / test.quality[:, test.index(S)].mean())
    if floor is not None:
        assert r.bound is not None and r.confidence == pytest.approx(0.95)
        assert r.retained_calibration >= floor and r.bound >= floor
        assert r.held == (r.retained_test >= floor)


@pytest.mark.parametrize("method", ["bootstrap", "exact"])
def test_calibrating_real_routers_on_gsm8k_halves(method: str, data_dir: Path) -> None:
    o = load("routellm/gsm8k", drop_contaminated=True)
    cal, test = split_halves(o, seed=0)
    assert len(cal) + len(test) == len(o) and not set(cal.prompts) & set(test.prompts)
    router = RandomRouter("random", RandomOptions(weights={W: 1.0, S: 1.0}, seed=0))
    r = calibrate(router, cal, QualityFloor(0.9), test, method=method, n_boot=400)
    coherent(r, cal, test, 0.9)
    assert r.summary().startswith("threshold")
    # A random router buys quality linearly: 90% retained needs most of the gap, ~half the calls or more.
    assert r.calibration.strong_share > 0.4
    # A simple length score (longer problems are harder) needs fewer strong calls than random.
    length = LengthRouter()
    by_length = calibrate(length, cal, QualityFloor(0.9), test, method=method, n_boot=400)
    coherent(by_length, cal, test, 0.9)
    assert by_length.calibration.strong_share < r.calibration.strong_share
    share = calibrate(length, cal, StrongShare(0.3), test)
    assert share.achieved_calibration <= 0.3 and abs(share.achieved_test - 0.3) < 0.06
    # Deploying the threshold makes route() take the calibrated decisions.
    length.threshold = share.threshold
    sent = [length.route(q).primary == S for q in requests(cal)]
    assert np.mean(sent) == pytest.approx(share.calibration.strong_share)
    np.testing.assert_array_equal(router_scores(length, cal) >= share.threshold, sent)


class LengthRouter(ScoringRouter):
    """Score = prompt length in characters (a real, if simple, scoring router)."""

    kind = "length-test"
    weak, strong, threshold = W, S, 0.0

    def __init__(self) -> None:
        super().__init__("length", None)

    def score(self, request: ChatRequest) -> float:
        return float(len(request.text()))
