"""The random router as a band: its expected figures (the diagonal) and the spread of seeded draws,
by hand on a small table and on the recorded GSM8K answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gearshift.lab import metrics
from gearshift.lab.baselines import random_band
from gearshift.lab.evaluate import evaluate_pair
from gearshift.lab.replay import ScoreOrder
from gearshift.outcomes.datasets import ROUTELLM_STRONG, ROUTELLM_WEAK, load
from gearshift.outcomes.table import Outcomes


def _table() -> Outcomes:
    qw = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    qs = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    return Outcomes(prompts=np.array([f"p{i}" for i in range(8)], dtype=object), models=["weak", "strong"],
                    quality=np.stack([qw, qs], 1), cost=np.stack([np.full(8, 1.0), np.full(8, 9.0)], 1))


def test_expected_figures_are_the_diagonal_and_the_draws_spread_around_them() -> None:
    o = _table()
    b = random_band(o, "weak", "strong", draws=400, seed=0, levels=(0.9,))
    # Half the calls strong, in expectation: quality (3/8 + 6/8) / 2, cost (1 + 9) / 2.
    assert (b.share.value, b.quality.value, b.cost.value) == (0.5, pytest.approx(9 / 16), pytest.approx(5.0))
    assert b.savings.value == pytest.approx(1 - 5 / 9) and b.quality_retained.value == pytest.approx(0.75)
    assert (b.apgr.value, b.cpt50.value, b.cpt80.value) == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.8))
    # Keeping 90% of 6/8 on the diagonal: share p with 3/8 + p 3/8 = 0.675, p = 0.8, cost 1 + 0.8 x 8.
    level = b.levels[0.9]
    assert level is not None and level[1].value == pytest.approx(0.8)
    assert level[0].value == pytest.approx(1 - (1 + 0.8 * 8) / 9)
    # Eight prompts: single draws scatter widely around the expectation.
    for e in (b.share, b.quality, b.apgr, b.cpt50):
        assert e.low < e.value < e.high and e.n_resamples == 400
    assert b.pgr_low[50] < 0.5 < b.pgr_high[50]
    assert b.pgr_low[0] == b.pgr_high[0] == 0 and b.pgr_low[-1] == b.pgr_high[-1] == 1


def test_the_gsm8k_random_row_is_the_expectation_with_a_band_holding_a_single_draw(data_dir: Path) -> None:
    o = load("routellm/gsm8k")
    rows = {r.name: r for r in evaluate_pair(o, ROUTELLM_WEAK, ROUTELLM_STRONG, n_boot=50, levels=(0.95,))}
    r = rows["random"]
    assert r.band is not None and r.band.draws == 200
    assert r.apgr is not None and r.apgr.value == pytest.approx(0.5)
    assert 0.44 < r.apgr.low < 0.48 and 0.52 < r.apgr.high < 0.56  # measured: 0.464 - 0.532
    assert r.strong_share.value == 0.5 and r.strong_share.low < 0.5 < r.strong_share.high
    assert r.curve is not None and np.allclose(r.curve.pgr, r.curve.strong_share)  # the diagonal
    assert r.quality_retained == pytest.approx((o.quality.mean(0).sum() / 2) / o.quality[:, 1].mean())
    # Any one seeded draw (what the row used to show) falls inside the band, most of the time.
    inside = 0
    for seed in range(20):
        u = np.random.default_rng(1000 + seed).random(len(o))
        a = float(metrics.apgr(ScoreOrder.from_scores(u).curve(o, ROUTELLM_WEAK, ROUTELLM_STRONG)))
        inside += r.apgr.low <= a <= r.apgr.high
    assert inside >= 15
