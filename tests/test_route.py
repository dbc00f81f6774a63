"""The walk of a route (route.Walk) on hand-made routes: which step comes next, accept, escalate,
the best-scored answer, the ungated last step, and the notes the client sees."""

from __future__ import annotations

from typing import Any

from gearshift.route import Route, Step, Walk

GATE: Any = object()  # the walk only asks whether a step has gates, never runs them


def route(*gated: bool, accept: str = "last") -> Route:
    steps = [Step(f"m{i}", gates=(GATE,) if g else ()) for i, g in enumerate(gated)]
    return Route(steps=steps, router="r", reason="hand-made", accept=accept)


def test_a_passing_first_tier_is_accepted() -> None:
    w = Walk(route(True, False))
    assert w.gated and w.step.model == "m0" and w.role == "primary"
    assert w.judge("m0", [("arithmetic", True, 1.0), ("length", True, 0.9)]) == 0
    assert w.notes == ["accepted at tier 1"]


def test_a_failing_tier_escalates_and_the_last_answers_ungated() -> None:
    w = Walk(route(True, True, False))
    assert w.judge("m0", [("arithmetic", False, 0.0), ("length", True, 1.0)]) is None
    assert w.index == 1 and w.step.model == "m1" and w.role == "escalation" and w.gated
    assert w.judge("fb", [("arithmetic", False, 0.2), ("length", False, 0.1)]) is None
    assert w.index == 2 and not w.gated  # the last tier answers whatever it says
    assert w.notes == ["tier 1 (m0) failed arithmetic", "tier 2 (fb) failed arithmetic, length"]


def test_the_last_tier_is_ungated_under_accept_last_even_with_gates() -> None:
    w = Walk(route(True, True))
    w.judge("m0", [("g", False, 0.3)])
    assert not w.gated


def test_an_ungated_first_step_answers_at_once() -> None:
    w = Walk(route(False, True))
    assert not w.gated and w.index == 0 and w.notes == []


def test_accept_best_returns_the_best_scored_answer_first_on_ties() -> None:
    w = Walk(route(True, True, True, accept="best"))
    assert w.judge("m0", [("g", False, 0.4), ("h", True, 0.9)]) is None  # a step's score is its lowest
    assert w.judge("m1", [("g", False, 0.3)]) is None
    assert w.gated  # the last step is gated under accept="best"
    assert w.judge("m2", [("g", False, 0.4)]) == 0  # ties keep the earlier answer
    assert w.notes == ["tier 1 (m0) failed g", "tier 2 (m1) failed g", "tier 3 (m2) failed g",
                       "no tier passed; best score 0.40"]


def test_accept_best_still_accepts_a_passing_last_tier() -> None:
    w = Walk(route(True, True, accept="best"))
    w.judge("m0", [("g", False, 0.9)])
    assert w.judge("m1", [("g", True, 0.5)]) == 1
    assert w.notes == ["tier 1 (m0) failed g", "accepted at tier 2"]


def test_a_single_step_route_is_ungated() -> None:
    w = Walk(route(False))
    assert not w.gated and w.role == "primary" and w.step.model == "m0"
