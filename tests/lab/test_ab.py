"""lab.ab: each arm's intervals and the differences' intervals and p-values, against hand-computed ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from gearshift.lab.ab import BOOTSTRAP_CELLS, ab_report
from gearshift.lab.bootstrap import Z95
from gearshift.store.base import ABRows


def _rows(arm: str, n: int, rng: np.random.Generator, cost: float, pass_rate: float) -> list[dict[str, Any]]:
    return [{"id": f"{arm}-{i}", "router": "ab", "arm": arm, "status": 200, "cost_usd": cost * rng.lognormal(0, 0.5),
             "latency_ms": float(rng.gamma(2.0, 200.0)), "verdicts_n": 1, "verdicts_passed": int(rng.random() < pass_rate),
             "verdicts": [{"gate": "shadow_agreement", "score": float(rng.random() < 0.8)}] if i % 10 == 0 else []}
            for i in range(n)]


def _columns(rows: list[dict[str, Any]]) -> ABRows:
    """Rows as TraceStore.ab_rows gives them."""
    return ABRows(*([r[c] for r in rows] for c in ("id", "router", "arm", "status", "cost_usd", "latency_ms", "verdicts_n",
                                                   "verdicts_passed")), {i: r["verdicts"] for i, r in enumerate(rows)
                                                                         if r["verdicts"]})


def test_a_big_varied_signal_gets_the_normal_interval_and_welchs_p() -> None:
    rng = np.random.default_rng(3)
    n = BOOTSTRAP_CELLS // 400 + 100  # over the bootstrap's budget at 400 resamples: the normal interval
    a, b = _rows("a", n, rng, 0.001, 0.9), _rows("b", n, rng, 0.002, 0.8)
    report = ab_report(_columns(a + b), control="b", n=400)
    cost_a = np.array([r["cost_usd"] for r in a])
    cost_b = np.array([r["cost_usd"] for r in b])
    est = report.arms[0].signals["cost_usd"]
    half = Z95 * cost_a.std() / np.sqrt(n)
    assert (est.value, est.low, est.high, est.n_resamples) == pytest.approx((cost_a.mean(), cost_a.mean() - half,
                                                                             cost_a.mean() + half, 0))
    d = {x.signal: x for x in report.differences["a"]}["cost_usd"]
    half = Z95 * np.sqrt(cost_a.var() / n + cost_b.var() / n)
    diff = cost_a.mean() - cost_b.mean()
    assert (d.diff.low, d.diff.high) == pytest.approx((diff - half, diff + half))
    assert d.p_value == pytest.approx(stats.ttest_ind(cost_a, cost_b, equal_var=False).pvalue)


def test_a_zero_one_signal_is_resampled_per_value_and_covers_like_the_binomial() -> None:
    rng = np.random.default_rng(4)
    a, b = _rows("a", 4000, rng, 0.001, 0.9), _rows("b", 3000, rng, 0.001, 0.85)
    report = ab_report(_columns(a + b), control="b", n=2000)
    p = np.mean([r["verdicts_passed"] for r in a])
    est = report.arms[0].signals["gate_pass"]
    se = np.sqrt(p * (1 - p) / len(a))
    assert est.n_resamples == 2000 and est.value == pytest.approx(p)
    assert (est.low, est.high) == pytest.approx((p - Z95 * se, p + Z95 * se), abs=0.15 * Z95 * se)
    agree = report.arms[0].signals["shadow_agreement"]
    assert report.arms[0].counts["shadow_agreement"] == 400 and agree.low < agree.value < agree.high
    d = {x.signal: x for x in report.differences["a"]}["gate_pass"]
    q = np.mean([r["verdicts_passed"] for r in b])
    se = np.sqrt(p * (1 - p) / len(a) + q * (1 - q) / len(b))
    assert (d.diff.low, d.diff.high) == pytest.approx((p - q - Z95 * se, p - q + Z95 * se), abs=0.15 * Z95 * se)


def test_a_small_varied_signal_keeps_the_plain_bootstrap() -> None:
    rng = np.random.default_rng(5)
    a, b = _rows("a", 300, rng, 0.001, 0.9), _rows("b", 300, rng, 0.003, 0.9)
    report = ab_report(_columns(a + b), control="b", n=1000)
    est = report.arms[0].signals["latency_ms"]
    lat = np.array([r["latency_ms"] for r in a])
    se = lat.std() / np.sqrt(len(lat))
    assert est.n_resamples == 1000
    assert (est.low, est.high) == pytest.approx((lat.mean() - Z95 * se, lat.mean() + Z95 * se), abs=0.2 * Z95 * se)
    assert report == ab_report(_columns(a + b), control="b", n=1000)  # seeded: the same report again
