"""TraceView: every meaning of a stored trace, on hand-built traces read back from a real store."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from gearshift.config import Price
from gearshift.store.sqlite import SQLiteStore
from gearshift.store.view import (
    SHADOW_RESOLUTION,
    CallView,
    PairEstimate,
    ShadowPair,
    TraceView,
    cache_figures,
    cache_line,
    wilson,
)
from gearshift.trace import Call, Trace

CHEAP, STRONG = Price(input=1.0, output=2.0), Price(input=10.0, output=30.0)


def _answer(model: str, role: str, cost: float, *, input_tokens: int = 100, output_tokens: int = 50,
            status: int = 200, error: str | None = None) -> Call:
    return Call(model=model, role=role, input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost,
                latency_ms=40.0, status=status, error=error, response=None if error else f"{model} says")


def _primary_only() -> Trace:
    return Trace(router="fixed", requested_model="auto", final_model="small", id="primary", created=1.0,
                 latency_ms=50.0, estimated_tokens=30, prompt="p1", calls=[_answer("small", "primary", 0.001)])


def _gated_accepted() -> Trace:
    return Trace(router="cascade", requested_model="auto", final_model="small", id="accepted", created=2.0,
                 latency_ms=90.0, prompt="p2",
                 calls=[_answer("small", "primary", 0.001), Call(model="judge", role="judge", cost_usd=0.0004)],
                 verdicts=[{"gate": "judge", "model": "small", "passed": True, "score": 0.9, "reasons": []}])


def _escalated() -> Trace:
    return Trace(router="cascade", requested_model="auto", final_model="large", id="escalated", created=3.0,
                 latency_ms=900.0, prompt="p3",
                 calls=[_answer("small", "primary", 0.001, input_tokens=100, output_tokens=80),
                        Call(model="length", role="gate", status=422),
                        _answer("large", "escalation", 0.02, input_tokens=120, output_tokens=40)],
                 verdicts=[{"gate": "length", "model": "small", "passed": False, "score": 0.0, "reasons": []}])


def _fallback() -> Trace:
    return Trace(router="fixed", requested_model="auto", final_model="backup", id="fallback", created=4.0, prompt="p4",
                 calls=[_answer("small", "primary", 0.0, status=503, error="overloaded"),
                        _answer("backup", "fallback", 0.003)])


def _shadowed(agree: bool = True) -> Trace:
    """As gateway/shadow.py records a pair: shadow call, its judge, then the two shadow verdicts."""
    return Trace(router="fixed", requested_model="auto", final_model="small", id="shadowed", created=5.0,
                 shadowed=True, prompt="p5",
                 calls=[_answer("small", "primary", 0.001), _answer("large", "shadow", 0.02),
                        Call(model="judge", role="shadow_judge", cost_usd=0.0005)],
                 verdicts=[{"gate": "shadow_agreement", "model": "small", "passed": agree, "score": float(agree),
                            "method": "judge", "reasons": []},
                           {"gate": "shadow_reference", "model": "large", "passed": True, "score": 1.0,
                            "method": "reference", "reasons": []}])


def _failed() -> Trace:
    return Trace(router="fixed", requested_model="auto", final_model=None, id="failed", created=6.0, status=502,
                 error="every upstream failed", calls=[_answer("small", "primary", 0.0, status=502, error="bad gateway")])


@pytest.fixture
def views(tmp_path: Path) -> dict[str, TraceView]:
    """The six traces written to SQLite and read back as views, by id."""
    traces = [_primary_only(), _gated_accepted(), _escalated(), _fallback(), _shadowed(), _failed()]
    store = SQLiteStore(tmp_path / "t.db")
    store.write(traces)
    out = {v.id: v for v in store.views()}
    assert out.keys() == {t.id for t in traces}
    for t in traces:  # a Trace and its stored row mean the same
        assert TraceView.of(t) == out[t.id]
    store.close()
    return out


def test_primary_only(views: dict[str, TraceView]) -> None:
    v = views["primary"]
    assert v.routed and v.answered and not v.failed
    assert not v.gated and not v.escalated and not v.fell_back and not v.shadow_answered
    assert v.primary_model == v.final_model == "small"
    assert v.cost_usd == pytest.approx(0.001) and v.shadow_cost_usd == 0 and v.gate_cost_usd == 0
    assert v.answer_tokens == 150 and v.latency_ms == 50.0 and v.estimated_tokens == 30
    assert v.pairs == () and v.served_pairs("large") == ()
    # Always-large: the prompt's 100 tokens in and the answer's 50 out at large's prices.
    assert v.counterfactual_cost(STRONG) == pytest.approx((100 * 10 + 50 * 30) / 1e6)


def test_gated_and_accepted(views: dict[str, TraceView]) -> None:
    v = views["accepted"]
    assert v.gated and not v.escalated and v.gates_passed == 1
    assert [c.role for c in v.gate_calls] == ["judge"] and len(v.gate_verdicts) == 1
    assert v.gate_verdicts[0].grade == 0.9 and not v.gate_verdicts[0].shadow
    assert v.cost_usd == pytest.approx(0.0014) and v.gate_cost_usd == pytest.approx(0.0004)
    assert v.answer_tokens == 150  # the judge's tokens are not the client's


def test_escalated(views: dict[str, TraceView]) -> None:
    v = views["escalated"]
    assert v.gated and v.escalated and v.gates_passed == 0
    assert v.primary_model == "small" and v.final_model == "large"
    assert v.cost_usd == pytest.approx(0.021)
    assert [c.model for c in v.answer_calls] == ["small", "large"]
    # The largest prompt seen (120 tokens) and the final answer's output (large's 40 tokens).
    assert v.counterfactual_cost(STRONG) == pytest.approx((120 * 10 + 40 * 30) / 1e6)
    assert v.of_router("cascade") and not v.of_router("fixed")


def test_fallback(views: dict[str, TraceView]) -> None:
    v = views["fallback"]
    assert v.answered and v.fell_back and not v.escalated and not v.gated
    assert [c.ok for c in v.calls] == [False, True]
    assert [c.model for c in v.answers] == ["backup"]  # the failed call gave no answer
    # The failed call is left out of the counterfactual: its tokens were never answered.
    assert v.counterfactual_cost(CHEAP) == pytest.approx((100 * 1 + 50 * 2) / 1e6)


def test_shadowed_with_a_pair(views: dict[str, TraceView]) -> None:
    v = views["shadowed"]
    assert v.shadowed and v.shadow_answered and not v.gated  # shadow verdicts do not gate
    assert [c.role for c in v.serving_calls] == ["primary"]
    assert [c.role for c in v.shadow_calls] == ["shadow", "shadow_judge"]
    assert v.cost_usd == pytest.approx(0.001) and v.shadow_cost_usd == pytest.approx(0.0205)
    assert v.pair_reference == "large"
    assert v.pairs == (ShadowPair(model="small", reference="large", passed=True, score=1.0, method="judge"),)
    assert v.served_pairs() == v.pairs
    assert [c.model for c in v.answers] == ["small", "large"]
    assert v.grades == {"small": 1.0, "large": 1.0}


def test_exploration_pair_is_not_a_served_pair() -> None:
    # The client got the reference's answer; the cheaper model was tried in the background.
    t = _shadowed()
    t.final_model = "large"
    t.verdicts[0]["model"] = "small"
    v = TraceView.of(t)
    assert len(v.pairs) == 1 and v.served_pairs() == ()


def test_failed(views: dict[str, TraceView]) -> None:
    v = views["failed"]
    assert v.routed and not v.answered and v.failed and v.status == 502
    assert v.error == "every upstream failed" and v.answers == ()
    assert v.counterfactual_cost(STRONG) == 0.0


def test_rejected_and_judge_after_shadow() -> None:
    # A request rejected before routing has no router; a judge call after the shadow call is shadow work.
    assert not TraceView.of({"router": "", "status": 401, "calls": []}).routed
    t = _shadowed()
    t.calls[2].role = "judge"
    v = TraceView.of(t)
    assert not v.gated and v.shadow_cost_usd == pytest.approx(0.0205)


def test_hand_written_trace_dicts() -> None:
    """Trace files for the lab: missing fields take defaults; calls may carry their own grade."""
    row: dict[str, Any] = {"prompt": "q", "calls": [
        {"model": "a", "role": "primary", "quality": True},
        {"model": "b", "role": "escalation", "verdict": {"score": 0.25}},
        {"model": "c", "role": "shadow"}],
        "verdicts": [{"model": "c", "score": 0.5}, {"model": "c"}]}
    v = TraceView.of(row)
    assert v.status == 200 and v.answered is False  # no final model recorded
    assert [v.quality(c) for c in v.answers] == [1.0, 0.25, 0.5]
    assert math.isnan(v.quality(CallView(model="d", role="primary")))
    assert v.verdicts[1].grade is None and v.verdicts[0].grade == 0.5
    assert TraceView.of(v) is v


# --- disagreement is not loss: PairEstimate ---------------------------------------------------------

def _pair(passed: bool, method: str = "final_answer", resolved: tuple[float, float] | None = None) -> ShadowPair:
    return ShadowPair("small", "large", passed, float(passed), method, resolved)


def test_agreement_alone_is_a_lower_bound() -> None:
    est = PairEstimate.of([_pair(True)] * 6 + [_pair(False)] * 4)
    assert est.lower_bound and est.retained == pytest.approx(0.6)
    assert est.interval() == pytest.approx(wilson(6, 10))  # without resolutions: Wilson's on the agreement
    assert "lower bound" in est.line() and "4 disagreements" in est.line()
    # A pairwise judge's failure is a judgement, not a disagreement: nothing to resolve, no lower bound.
    judged = PairEstimate.of([_pair(True)] * 6 + [_pair(False, "judge")] * 4)
    assert not judged.lower_bound and judged.retained == pytest.approx(0.6)


def test_resolved_disagreements_stand_for_all_of_them() -> None:
    # 6 agree; 4 disagree, 2 resolved: once the reference was wrong and the answer right, once the answer
    # wrong. Unresolved disagreements count at the resolved means: answer 1/2, reference 1/2.
    pairs = [_pair(True)] * 6 + [_pair(False, resolved=(1.0, 0.0)), _pair(False, resolved=(0.0, 1.0))] + [_pair(False)] * 2
    est = PairEstimate.of(pairs)
    assert not est.lower_bound and (est.disagreed, est.resolved) == (4, 2)
    assert est.weak_mean == 0.5 and est.reference_mean == 0.5
    assert est.retained == pytest.approx((6 + 4 * 0.5) / (6 + 4 * 0.5))  # 1.0: no loss after all
    lo, hi = est.interval()  # type: ignore[misc]
    assert lo < 1.0 < hi
    assert est.grades(pairs[-1]) == (0.5, 0.5) and est.grades(pairs[0]) is None and est.grades(pairs[6]) is None
    # Mixed with a judge's failure (answer 0, reference 1): (6 + 3 x 0.5) / (6 + 1 + 3 x 0.5).
    mixed = PairEstimate.of([_pair(True)] * 6 + [_pair(False, "judge")] + pairs[6:9])
    assert mixed.retained == pytest.approx(7.5 / 8.5)


def test_resolution_verdicts_grade_the_pair_in_the_trace() -> None:
    t = _shadowed(agree=False)
    t.verdicts[0]["method"] = "final_answer"
    t.verdicts += [{"gate": SHADOW_RESOLUTION, "model": "small", "passed": True, "score": 1.0, "method": "judge"},
                   {"gate": SHADOW_RESOLUTION, "model": "large", "passed": False, "score": 0.0, "method": "judge"}]
    v = TraceView.of(t)
    [pair] = v.pairs
    assert pair.disagreement and pair.resolved == (1.0, 0.0)
    assert v.grades == {"small": 1.0, "large": 0.0}  # the resolution, not the agreement, grades the answers


def test_cache_figures_count_results_and_the_savings_of_hits_alone() -> None:
    rows: list[Any] = [{"cache": "hit", "cache_saved_usd": 0.5}, {"cache": "hit", "cache_saved_usd": 0.25},
                       {"cache": "miss", "cache_saved_usd": 9.0}, {"cache": "bypass"}, {"cache": "skip"}, {},
                       Trace(router="r", requested_model="r", cache="hit", cache_saved_usd=0.125)]
    f = cache_figures(rows)
    assert f == {"requests": 6, "by_result": {"hit": 3, "miss": 1, "bypass": 1, "skip": 1}, "hit_rate": 0.75,
                 "saved_usd": 0.875}
    assert cache_line(f).startswith("response cache: 3 hits, 1 misses, 1 bypassed, 1 not cacheable (hit rate 75.0%)")
    assert cache_figures([{}])["hit_rate"] is None and TraceView.of(rows[0]).cache_hit
