"""Lab metrics on tiny hand-made tables with hand-computed answers, plus properties (hypothesis)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gearshift.lab import metrics as M
from gearshift.lab.replay import Curve, ScoreOrder, operating_point, sweep_scores
from gearshift.outcomes.table import Outcomes


def table(qw, qs, cw=None, cs=None, models=("weak", "strong")) -> Outcomes:
    n = len(qw)
    cw = np.full(n, 1.0) if cw is None else np.asarray(cw, float)
    cs = np.full(n, 10.0) if cs is None else np.asarray(cs, float)
    return Outcomes(prompts=np.array([f"p{i}" for i in range(n)], dtype=object), models=list(models),
                    quality=np.stack([np.asarray(qw, float), np.asarray(qs, float)], axis=1),
                    cost=np.stack([cw, cs], axis=1))


def curve(share, quality) -> Curve:
    k = len(share)
    return Curve(threshold=np.linspace(1, 0, k), strong_share=np.asarray(share, float),
                 quality=np.asarray(quality, float), cost=np.zeros(k), weak="w", strong="s", n=k)


# --- aggregates ----------------------------------------------------------------------------------


def test_cost_savings_quality_retained_share() -> None:
    assert M.mean_cost([1.0, 2.0, 6.0]) == 3.0
    assert M.mean_quality([1, 0, 1, 1]) == 0.75
    assert M.savings(2.5, 10.0) == pytest.approx(0.75)
    assert M.quality_retained(0.72, 0.8) == pytest.approx(0.9)
    assert M.strong_share(np.array([0, 1, 1, 0, 1]), 1) == pytest.approx(0.6)
    o = table([1, 0], [1, 1], cw=[1, 1], cs=[5, 5])
    assert M.strongest(o) == "strong"


def test_pgr() -> None:
    assert M.pgr(0.7, 0.6, 0.8) == pytest.approx(0.5)
    assert M.pgr(0.6, 0.6, 0.8) == 0.0
    assert M.pgr(0.9, 0.6, 0.8) == pytest.approx(1.5)  # above the strong model: more than the gap
    assert math.isnan(float(M.pgr(0.7, 0.7, 0.7)))


# --- APGR and CPT -------------------------------------------------------------------------------------


def test_apgr_trapezoid_on_the_points() -> None:
    # share 0, .5, 1 with quality .5, .8, .9 -> PGR 0, .75, 1
    c = curve([0, 0.5, 1], [0.5, 0.8, 0.9])
    np.testing.assert_allclose(c.pgr, [0, 0.75, 1])
    # 0.5 * (0 + .75) / 2 + 0.5 * (.75 + 1) / 2 = .1875 + .4375
    assert M.apgr(c) == pytest.approx(0.625)


def test_apgr_of_the_diagonal_is_one_half() -> None:
    assert M.apgr(curve([0, 1], [0.2, 0.6])) == pytest.approx(0.5)
    assert M.apgr(curve([0, 0.3, 1], [0.2, 0.32, 0.6])) == pytest.approx(0.5)


def test_cpt_interpolates_on_the_crossing_segment() -> None:
    c = curve([0, 0.5, 1], [0.5, 0.8, 0.9])  # PGR 0, .75, 1
    assert M.cpt(c, 0.5) == pytest.approx(0.5 * 0.5 / 0.75)  # on the first segment: 1/3
    assert M.cpt(c, 0.8) == pytest.approx(0.5 + 0.5 * 0.05 / 0.25)  # on the second: 0.6
    assert M.cpt(c, 0.75) == pytest.approx(0.5)  # exactly at a point
    assert M.cpt(c, 0.0) == 0.0
    assert math.isnan(M.cpt(c, 1.5))  # never reached


def test_cpt_takes_the_first_crossing_of_a_curve_that_does_not_rise() -> None:
    # PGR 0, .9, .4, 1 at shares 0, .2, .6, 1: it reaches .8 on the first segment, falls, rises again.
    c = curve([0, 0.2, 0.6, 1], [0.0, 0.9, 0.4, 1.0])
    assert M.cpt(c, 0.8) == pytest.approx(0.2 * 0.8 / 0.9)
    assert M.cpt(c, 0.95) == pytest.approx(0.6 + 0.4 * (0.95 - 0.4) / 0.6)
    # np.interp (RouteLLM's evaluate.py) assumes rising quality; on this curve it finds a later crossing.
    pg = [0.0, 0.0, 0.3, 0.4, 0.6, 0.4, 0.2, 0.1, 0.6, 0.7, 1.0]
    d = curve(np.linspace(0, 1, 11), pg)
    assert M.cpt(d, 0.5) == pytest.approx(0.3 + 0.1 * 0.1 / 0.2)  # 0.35
    assert np.interp(0.5, d.pgr, d.strong_share) == pytest.approx(0.7 + 0.1 * 0.4 / 0.5)  # 0.78


def test_metrics_vectorise_over_a_batch_of_curves() -> None:
    shares = np.array([[0, 0.5, 1], [0, 0.2, 1], [0, 0.6, 1]])
    quality = np.array([[0.5, 0.8, 0.9], [0.1, 0.3, 0.5], [0.4, 0.4, 0.6]])
    batch = Curve(threshold=np.array([np.inf, 0.5, 0.0]), strong_share=shares, quality=quality, cost=np.zeros((3, 3)),
                  weak="w", strong="s", n=3)
    for x in (0.3, 0.5, 0.8):
        want = [M.cpt(curve(s, q), x) for s, q in zip(shares, quality, strict=True)]
        np.testing.assert_allclose(M.cpt(batch, x), want)
    np.testing.assert_allclose(M.apgr(batch), [M.apgr(curve(s, q)) for s, q in zip(shares, quality, strict=True)])


# --- sweeps: ties and thresholds --------------------------------------------------------------------


def test_sweep_handles_tied_scores_exactly() -> None:
    #            p0   p1   p2   p3   p4
    scores = [0.9, 0.5, 0.5, 0.1, 0.5]
    qw = [0, 1, 0, 1, 0]
    qs = [1, 1, 1, 0, 0]
    o = table(qw, qs, cw=[1] * 5, cs=[10] * 5)
    c = sweep_scores(np.array(scores), o, "weak", "strong")
    # Points: none strong; p0; p0 + all three 0.5s; everyone. Never a split tie group.
    np.testing.assert_allclose(c.threshold, [np.inf, 0.9, 0.5, 0.1])
    np.testing.assert_allclose(c.strong_share, [0, 0.2, 0.8, 1.0])
    # quality: weak alone .4; p0 to strong +1; p1 +0, p2 +1, p4 +0; p3 -1
    np.testing.assert_allclose(c.quality, [0.4, 0.6, 0.8, 0.6])
    np.testing.assert_allclose(c.cost, [1.0, 2.8, 8.2, 10.0])
    for i, t in enumerate(c.threshold):
        p = operating_point(np.array(scores), o, "weak", "strong", t)
        assert (p.strong_share, p.quality, p.cost) == pytest.approx((c.strong_share[i], c.quality[i], c.cost[i]))


def test_sweep_at_given_thresholds_keeps_both_ends() -> None:
    scores = np.array([0.9, 0.5, 0.5, 0.1, 0.5])
    o = table([0, 1, 0, 1, 0], [1, 1, 1, 0, 0])
    c = sweep_scores(scores, o, "weak", "strong", thresholds=[0.95, 0.7, 0.5, 0.3])
    np.testing.assert_allclose(c.strong_share, [0, 0.2, 0.8, 1.0])  # .95 is all-weak; .5 and .3 coincide
    np.testing.assert_allclose(c.threshold, [np.inf, 0.7, 0.5, 0.1])
    assert c.at(0.6).strong_share == pytest.approx(0.2)


# --- oracle ---------------------------------------------------------------------------------------------


def test_oracle_choice_is_the_cheapest_model_that_gets_it_right() -> None:
    o = Outcomes(prompts=np.array(["a", "b", "c", "d"], dtype=object), models=["small", "mid", "big"],
                 quality=np.array([[1, 1, 1], [0, 1, 1], [0, 0, 0], [0.5, 0.7, 0.9]], float),
                 cost=np.array([[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3]], float))
    np.testing.assert_array_equal(M.oracle_choice(o), [0, 1, 0, 2])  # none right -> cheapest; else best
    np.testing.assert_array_equal(M.oracle_choice(o, pass_bar=0.6), [0, 1, 0, 1])  # cheapest passing the bar
    d = M.oracle_decisions(o)
    np.testing.assert_allclose(d.quality, [1, 1, 0, 0.9])
    np.testing.assert_allclose(d.cost, [1, 2, 1, 3])


def test_two_model_oracle_share_is_where_only_the_strong_model_is_right() -> None:
    o = table([1, 0, 0, 1, 0], [1, 1, 0, 0, 1])
    assert M.oracle_pair_choice(o, "weak", "strong").mean() == pytest.approx(2 / 5)


def test_oracle_curve_by_hand() -> None:
    o = table([1, 0, 0, 0], [1, 1, 1, 0])  # gains 0, 1, 1, 0; q_weak .25, q_strong .75
    c = M.oracle_curve(o, "weak", "strong")
    np.testing.assert_allclose(c.strong_share, [0, 0.5, 1])
    np.testing.assert_allclose(c.quality, [0.25, 0.75, 0.75])
    assert M.apgr(c) == pytest.approx(0.75)
    assert M.cpt(c, 0.5) == pytest.approx(0.25)  # x * (q_strong - q_weak) on the rising part


def test_expected_random_curve_is_the_diagonal() -> None:
    o = table([1, 0, 0, 1], [1, 1, 1, 0])
    c = M.expected_random_curve(o, "weak", "strong")
    assert M.apgr(c) == pytest.approx(0.5)
    for x in (0.2, 0.5, 0.8):
        assert M.cpt(c, x) == pytest.approx(x)


# --- RouterBench: NDCH and AIQ ----------------------------------------------------------------------


def test_ndch_and_aiq_by_hand() -> None:
    cost = [1, 2, 3, 4, 2.5]
    quality = [0.5, 0.6, 0.9, 0.8, 0.55]
    hc, hq = M.ndch(cost, quality)
    np.testing.assert_allclose(hc, [1, 3])  # (2, .6) and (2.5, .55) lie under the chord; (4, .8) is past the best
    np.testing.assert_allclose(hq, [0.5, 0.9])
    # [1, 3]: trapezoid 2 * (.5 + .9) / 2 = 1.4; [3, 4]: flat .9 -> total 2.3 over a range of 3
    assert M.aiq(cost, quality) == pytest.approx(2.3 / 3)
    # A common range that starts below the router's cheapest point counts 0 there.
    assert M.aiq(cost, quality, (0, 4)) == pytest.approx(2.3 / 4)
    assert M.hull_value(hc, hq, [0.5, 2, 5]).tolist() == pytest.approx([0.0, 0.7, 0.9])


def test_ndch_of_a_concave_set_keeps_every_point() -> None:
    hc, hq = M.ndch([1, 2, 3], [0.5, 0.8, 0.9])
    np.testing.assert_allclose(hc, [1, 2, 3])
    assert M.aiq([1, 2, 3], [0.5, 0.8, 0.9]) == pytest.approx(((0.5 + 0.8) / 2 + (0.8 + 0.9) / 2) / 2)


def test_zero_router_is_the_hull_of_single_models() -> None:
    o = Outcomes(prompts=np.array(["a", "b"], dtype=object), models=["cheap", "mid", "dear"],
                 quality=np.array([[0, 1, 1], [1, 0, 1]], float), cost=np.array([[1, 2, 4], [1, 2, 4]], float))
    mc, mq = M.model_points(o)
    np.testing.assert_allclose(mc, [1, 2, 4])
    np.testing.assert_allclose(mq, [0.5, 0.5, 1.0])
    hc, hq = M.zero_router(o)
    np.testing.assert_allclose(hc, [1, 4])  # "mid" is dominated by mixing cheap and dear
    assert M.aiq(mc, mq) == pytest.approx((0.5 + 1.0) / 2)


# --- properties -------------------------------------------------------------------------------------------

binary = st.integers(0, 1)


@st.composite
def pair_tables(draw, max_n: int = 25):  # type: ignore[no-untyped-def]
    n = draw(st.integers(2, max_n))
    frac = draw(st.booleans())
    q = st.floats(0, 1, allow_nan=False) if frac else binary
    qw = draw(st.lists(q, min_size=n, max_size=n))
    qs = draw(st.lists(q, min_size=n, max_size=n))
    cw = draw(st.lists(st.floats(0.1, 1), min_size=n, max_size=n))
    cs = draw(st.lists(st.floats(1.5, 5), min_size=n, max_size=n))
    scores = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))  # small ints: many ties
    return table(qw, qs, cw, cs), np.array(scores, float)


@settings(max_examples=150, deadline=None)
@given(pair_tables())
def test_vectorised_sweep_equals_evaluating_each_threshold(data) -> None:  # type: ignore[no-untyped-def]
    o, scores = data
    c = sweep_scores(scores, o, "weak", "strong")
    assert c.strong_share[0] == 0 and c.strong_share[-1] == 1
    for i, t in enumerate(c.threshold):
        p = operating_point(scores, o, "weak", "strong", t)
        assert p.strong_share == pytest.approx(c.strong_share[i])
        assert p.quality == pytest.approx(c.quality[i])
        assert p.cost == pytest.approx(c.cost[i])


@settings(max_examples=150, deadline=None)
@given(pair_tables())
def test_oracle_dominates_every_router(data) -> None:  # type: ignore[no-untyped-def]
    """Defined carefully: (1) at every strong-call share no threshold router's quality exceeds the oracle
    curve's; (2) per prompt, the oracle's quality is at least any choice's, and a choice of equal quality
    costs at least as much as the oracle's (the oracle is the cheapest of the best)."""
    o, scores = data
    oc = M.oracle_curve(o, "weak", "strong")
    c = sweep_scores(scores, o, "weak", "strong")
    ceiling = np.interp(c.strong_share, oc.strong_share, oc.quality)
    assert np.all(c.quality <= ceiling + 1e-9)
    od = M.oracle_decisions(o)
    rng = np.random.default_rng(0)
    for _ in range(5):
        pick = rng.integers(0, 2, size=len(o))
        rows = np.arange(len(o))
        q, cost = o.quality[rows, pick], o.cost[rows, pick]
        assert np.all(od.quality >= q - 1e-12)
        same = od.quality == q
        assert np.all(od.cost[same] <= cost[same] + 1e-12)
        assert od.mean_quality >= q.mean() - 1e-12


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6).flatmap(lambda n: st.tuples(st.lists(binary, min_size=n, max_size=n),
                                                     st.lists(binary, min_size=n, max_size=n))))
def test_random_apgr_is_one_half_in_expectation(data) -> None:  # type: ignore[no-untyped-def]
    """Averaged over every ordering of the prompts (every outcome of a random router with distinct
    scores), APGR is exactly 0.5 whenever there is a gap to recover."""
    qw, qs = data
    if sum(qs) == sum(qw):
        return  # no gap: PGR undefined
    o = table(qw, qs)
    n = len(qw)
    values = [M.apgr(sweep_scores(np.array(perm, float), o, "weak", "strong"))
              for perm in itertools.permutations(range(n))]
    assert np.mean(values) == pytest.approx(0.5)


def test_score_order_threshold_is_the_lowest_strong_score() -> None:
    so = ScoreOrder.from_scores(np.array([0.2, 0.8, 0.8, 0.5]))
    np.testing.assert_array_equal(so.ends, [0, 2, 3, 4])
    np.testing.assert_allclose(so.threshold, [np.inf, 0.8, 0.5, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        ScoreOrder.from_scores(np.array([0.1, np.nan]))


def test_cpt_finds_a_crossing_that_floating_error_puts_a_hair_below_x() -> None:
    # PGR 0.5 computed as 0.49999999999999967 must count as reaching 0.5 on its own segment.
    got = M.cpt_points(np.array([0, .3, .6, 1.]), np.array([0, 0.49999999999999967, .4, 1.]), 0.5)
    assert got == pytest.approx(0.3)


def test_cpt_on_gsm8k_matches_exact_rational_arithmetic(data_dir) -> None:  # type: ignore[no-untyped-def]
    from fractions import Fraction

    from gearshift.outcomes import datasets

    o = datasets.load("routellm/gsm8k")
    weak, strong = datasets.ROUTELLM_WEAK, datasets.ROUTELLM_STRONG
    scores = np.random.default_rng(1172).random(len(o))
    got = M.cpt(sweep_scores(scores, o, weak, strong), 0.5)
    # The same curve in exact fractions: send the k highest scores strong, k = 0..n.
    qw = o.quality[:, o.models.index(weak)].astype(int)
    qs = o.quality[:, o.models.index(strong)].astype(int)
    n, gap = len(o), int(qs.sum() - qw.sum())
    correct, prev_share, prev_pgr = 0, Fraction(0), Fraction(0)
    for k, i in enumerate(np.argsort(-scores, kind="stable"), start=1):
        correct += int(qs[i] - qw[i])
        share, pgr = Fraction(k, n), Fraction(correct, gap)
        if pgr >= Fraction(1, 2):
            exact = prev_share + (Fraction(1, 2) - prev_pgr) / (pgr - prev_pgr) * (share - prev_share)
            break
        prev_share, prev_pgr = share, pgr
    assert float(exact) == pytest.approx(0.483, abs=5e-4)
    assert got == pytest.approx(float(exact), abs=1e-12)
