"""The watch's figures, PSI, baseline format and drift verdicts on hand-made traces."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gearshift.errors import ConfigError
from gearshift.watch import Baseline, Histogram, Watch, compute_stats, psi, wilson
from gearshift.watch.drift import DRIFT, INSUFFICIENT, NO_BASELINE, OFF, OK, psi_noise
from tests.support.watch_helpers import STRONG, STRONG_COST, WEAK_COST, batch, cascade_trace, watch_config


def test_psi_hand_computed_and_smoothed() -> None:
    # (0.9-0.5) ln(0.9/0.5) + (0.1-0.5) ln(0.1/0.5)
    assert psi([50, 50], [90, 10]) == pytest.approx(0.4 * math.log(1.8) + 0.4 * math.log(5))
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0
    # An empty bin is floored at 1e-4, not infinite.
    assert math.isfinite(psi([50, 50], [100, 0]))
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3])


def test_psi_same_distribution_small_shifted_large() -> None:
    rng = np.random.default_rng(0)
    base = Histogram.fit(rng.normal(100, 20, 2000), bins=10)
    assert base is not None and len(base.counts) == 10 and base.n == 2000
    same = psi(base.counts, base.count(rng.normal(100, 20, 1000)))
    shifted = psi(base.counts, base.count(rng.normal(120, 20, 1000)))
    assert same < 0.05 and same < 3 * psi_noise(10, 2000, 1000)
    assert shifted > 0.25


def test_histogram_bins_are_right_closed_and_ties_merge() -> None:
    h = Histogram(edges=[1.0, 2.0], counts=[0, 0, 0])
    assert h.count([0.5, 1.0, 1.5, 2.0, 2.5, 100]).tolist() == [2, 2, 2]
    ties = Histogram.fit([5] * 50 + [7] * 50, bins=10)
    assert ties is not None and ties.edges == [5.0, 7.0] and ties.counts == [50, 50, 0]
    assert Histogram.fit([], bins=10) is None


def test_wilson_matches_published_values() -> None:
    lo, hi = wilson(80, 100, 0.95)
    assert lo == pytest.approx(0.7112, abs=1e-4) and hi == pytest.approx(0.8666, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(30, 30, 0.95)
    assert hi == 1.0 and lo == pytest.approx(0.8865, abs=1e-4)


def test_window_figures_hand_computed() -> None:
    config = watch_config()
    traces = batch(10, escalated_share=0.2, agree_share=0.75)  # 2 escalated; 8 weak, 6 of them agree
    traces += [cascade_trace(direct_strong=True, shadow=True)]  # an exploration pair: not served, not counted
    traces += [cascade_trace(status=502), cascade_trace(router="")]  # an upstream failure, a rejected request
    s = compute_stats(traces, config)
    assert (s.n, s.routed, s.answered, s.errors) == (13, 12, 11, 1)
    assert s.escalation_rate == pytest.approx(2 / 10)
    assert s.gate_pass_rate == pytest.approx(8 / 10)
    assert s.strong_share == pytest.approx(3 / 11)
    assert s.error_rate == pytest.approx(1 / 12)
    assert (s.pairs, s.agreements) == (8, 6)
    assert s.shadow_agreement == pytest.approx(0.75)
    # Spend excludes shadow calls; the counterfactual prices the prompt and final output at strong's rates.
    spend = 8 * WEAK_COST + 2 * (WEAK_COST + STRONG_COST) + STRONG_COST
    assert s.spend_usd == pytest.approx(spend)
    # Shadow spend: 8 reference answers, 1 exploring weak answer, 9 judge calls (whose role alone
    # does not make a request gated: they come after the shadow call).
    assert s.shadow_spend_usd == pytest.approx(8 * STRONG_COST + WEAK_COST + 9 * 0.00206)
    assert s.spend_ratio == pytest.approx(spend / (11 * STRONG_COST))
    est, lo, hi = s.quality_retained(0.95)
    cheap = 8 / 11
    assert est == pytest.approx(1 - 0.25 * cheap)
    wlo, whi = wilson(6, 8, 0.95)
    assert lo == pytest.approx(1 - (1 - wlo) * cheap) and hi == pytest.approx(1 - (1 - whi) * cheap)
    assert s.prompt_tokens.size == 12 and s.latency(50) == 100.0


def test_baseline_json_round_trip_and_errors(tmp_path) -> None:
    config = watch_config()
    b = Baseline.from_traces(batch(100, agree_share=0.9, tokens=40), config, source="test")
    text = b.to_json()
    d = json.loads(text)
    assert d["format"] == "gearshift-watch-baseline/1" and d["reference"] == STRONG
    assert set(d["values"]) >= {"escalation_rate", "quality_retained", "spend_ratio", "latency_p95_ms"}
    assert d["histograms"]["prompt_tokens"] == {"edges": [40.0], "counts": [100, 0]}
    assert Baseline.from_json(text) == b
    b.save(tmp_path / "b.json")
    assert Baseline.load(tmp_path / "b.json") == b
    with pytest.raises(ValueError, match="format"):
        Baseline.from_json(json.dumps({**d, "format": "other"}))
    with pytest.raises(ValueError, match="unknown baseline values"):
        Baseline.from_json(json.dumps({**d, "values": {"escalaton_rate": 0.1}}))
    # The lab can write a minimal baseline by hand: everything is optional.
    minimal = Baseline.from_json(json.dumps({"format": "gearshift-watch-baseline/1", "values": {"strong_share": 0.3}}))
    assert minimal.strong_share == 0.3 and minimal.prompt_tokens is None


def test_escalation_rate_drift_detected() -> None:
    config = watch_config()
    baseline = Baseline.from_traces(batch(200, escalated_share=0.2), config)
    watch = Watch(config)
    calm = watch.check(batch(100, escalated_share=0.25), baseline)
    assert calm.metric("escalation_rate").status == OK and not calm.alerts
    drifted = watch.check(batch(100, escalated_share=0.5), baseline)
    m = drifted.metric("escalation_rate")
    assert m.status == DRIFT and m.value == pytest.approx(0.5) and m.baseline == pytest.approx(0.2)
    assert m.bound == 0.1 and m.n == 100
    assert "escalation_rate 0.5 vs baseline 0.2" in m.message and m.message in drifted.alerts
    # More escalation means more strong answers and more spend: those drift too; inputs do not.
    assert {x.name for x in drifted.drifted} == {"escalation_rate", "gate_pass_rate", "strong_share", "spend_ratio"}
    assert drifted.metric("psi_prompt_tokens").status == OK
    # Too few requests: not judged.
    few = watch.check(batch(10, escalated_share=0.9), baseline)
    assert few.metric("escalation_rate").status == INSUFFICIENT and not few.drifted


def test_quality_lower_bound_below_floor_alerts() -> None:
    config = watch_config(quality_floor=0.9)
    baseline = Baseline.from_traces(batch(200, escalated_share=0.0, agree_share=0.97), config)
    watch = Watch(config)
    good = watch.check(batch(100, escalated_share=0.0, agree_share=1.0), baseline)
    q = good.metric("quality_retained")
    assert q.status == OK and q.value == 1.0 and q.lower == pytest.approx(wilson(100, 100)[0])
    bad = watch.check(batch(100, escalated_share=0.0, agree_share=0.8), baseline)
    q = bad.metric("quality_retained")
    assert q.status == DRIFT and q.value == pytest.approx(0.8) and q.lower == pytest.approx(0.7112, abs=1e-4)
    assert q.lower < 0.9 < q.upper or q.upper < 0.9
    assert bad.metric("shadow_agreement").status == DRIFT  # 0.97 -> 0.8, bound 0.05
    # Fewer pairs than watch.min_shadow_pairs: the wide interval is not an alert.
    few = watch.check(batch(25, escalated_share=0.0) + batch(10, escalated_share=0.0, agree_share=0.5), baseline)
    assert few.metric("quality_retained").status == INSUFFICIENT
    # Without a floor the estimate is still reported, never judged.
    off = Watch(watch_config()).check(batch(100, escalated_share=0.0, agree_share=0.5), baseline)
    assert off.metric("quality_retained").status == OFF and off.metric("quality_retained").value == 0.5


def test_latency_error_and_input_shift() -> None:
    config = watch_config()
    baseline = Baseline.from_traces([cascade_trace(tokens=40 + i % 20, latency_ms=100 + i % 10) for i in range(200)],
                                    config)
    watch = Watch(config)
    slow = watch.check([cascade_trace(tokens=40 + i % 20, latency_ms=300) for i in range(100)], baseline)
    assert slow.metric("latency_p95_ms").status == DRIFT
    assert slow.metric("psi_prompt_tokens").status == OK
    longer = watch.check([cascade_trace(tokens=200 + i, latency_ms=100) for i in range(100)], baseline)
    assert longer.metric("psi_prompt_tokens").status == DRIFT and longer.metric("psi_prompt_tokens").value > 0.25
    failing = watch.check(batch(95) + [cascade_trace(status=502) for _ in range(5)], baseline)
    assert failing.metric("error_rate").status == DRIFT
    # Router scores shift too, and a baseline without scores has nothing to compare with.
    scored = watch.check(batch(100, score=0.9), Baseline.from_traces(batch(200, score=0.1), config))
    assert scored.metric("psi_score").status == DRIFT
    unscored = watch.check(batch(100), Baseline.from_traces(batch(200, score=None), config))
    assert unscored.metric("psi_score").status == NO_BASELINE


def test_bounds_can_be_turned_off() -> None:
    config = watch_config(bounds={"escalation_rate": None, "psi": None})
    baseline = Baseline.from_traces(batch(200, escalated_share=0.2), config)
    r = Watch(config).check(batch(100, escalated_share=0.9, tokens=500), baseline)
    assert r.metric("escalation_rate").status == OFF and r.metric("psi_prompt_tokens").status == OFF
    assert r.metric("strong_share").status == DRIFT


def test_watch_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="watch.reference"):
        watch_config(reference="nope")
    with pytest.raises(ConfigError, match="watch.webhook_url"):
        watch_config(webhook_url="ftp://x")
    with pytest.raises(ConfigError, match="watch.bounds.psi"):
        watch_config(bounds={"psi": 0})
    assert watch_config().watch.enabled is False


def test_report_to_dict_is_json() -> None:
    config = watch_config()
    r = Watch(config).check(batch(100, escalated_share=0.5), Baseline.from_traces(batch(200), config))
    d = json.loads(json.dumps(r.to_dict()))
    assert d["window"]["n"] == 100 and d["alerts"] == r.alerts
    assert {m["name"] for m in d["metrics"]} >= {"escalation_rate", "quality_retained", "psi_prompt_tokens"}
    assert next(m for m in d["metrics"] if m["name"] == "escalation_rate")["drifted"] is True
    # 50 weak answers, 50 escalated (weak + strong); always-strong would be 100 strong answers.
    assert d["spend_usd"]["serving"] == pytest.approx(50 * WEAK_COST + 50 * (WEAK_COST + STRONG_COST))
    assert d["spend_usd"]["always_reference_estimate"] == pytest.approx(100 * STRONG_COST)


def test_quality_from_agreement_alone_says_it_is_a_lower_bound() -> None:
    config = watch_config(quality_floor=0.9)
    window = batch(100, escalated_share=0.0, agree_share=0.8)
    for t in window:  # scored by final answer, not by a judge: a disagreement may be the reference's error
        t.verdicts[-2]["method"] = "final_answer"
    watch = Watch(config)
    q = watch.check(window, Baseline.from_traces(window, config)).metric("quality_retained")
    assert q.value == pytest.approx(0.8) and "a lower bound" in q.message and "set shadow.resolve" in q.message
    judged = watch.check(batch(100, escalated_share=0.0, agree_share=0.8), Baseline.from_traces(window, config))
    assert "lower bound (" not in judged.metric("quality_retained").message
