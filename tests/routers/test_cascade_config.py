"""Cascade configuration: errors name the key, the rules hold at load, routes are what the config says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gearshift.config import Config
from gearshift.config import parse_config as shape_only
from gearshift.errors import BadRequest, ConfigError
from gearshift.gateway.executor import Executor
from gearshift.plan import build_routers
from gearshift.request import ChatRequest
from gearshift.routers.cascade import CascadeRouter
from tests.support.configs import parse_config

MODELS = {
    "small": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "price": {"input": 1, "output": 2}, "rank": 1},
    "medium": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "price": {"input": 3, "output": 6}, "rank": 5},
    "large": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "price": {"input": 10, "output": 30},
              "rank": 9},
}
GATES = [{"kind": "arithmetic"}, {"kind": "final_answer"}]


def config(cascade: dict[str, Any], tmp_path: Path | str = ".", **routers: Any) -> Config:
    return parse_config({"models": MODELS, "routers": {"c": {"kind": "cascade", **cascade}, **routers}},
                        base_dir=tmp_path)


def tiers(*models: str, gates: list[Any] | None = None) -> list[dict[str, Any]]:
    return [{"model": m, "gates": list(gates or GATES)} for m in models[:-1]] + [{"model": models[-1]}]


def error(cascade: dict[str, Any], **routers: Any) -> str:
    with pytest.raises(ConfigError) as e:
        config(cascade, **routers)
    return str(e.value)


def test_errors_name_the_key_and_the_fix() -> None:
    assert "routers.c.tiers.0.gate: unknown key for kind cascade" in error(
        {"tiers": [{"model": "small", "gate": []}, {"model": "large"}]})
    assert "routers.c.tiers.1.model: bad value 'huge'" in error({"tiers": tiers("small", "huge")})
    assert "routers.c.tiers: List should have at least 2 items" in error({"tiers": [{"model": "small"}]})
    assert "model 'small' is in tiers 0 and 1" in error({"tiers": tiers("small", "small")})
    msg = error({"tiers": tiers("small", "large", gates=[{"kind": "arithmetc"}])})
    assert "routers.c.tiers.0.gates.0.kind: bad value 'arithmetc'" in msg and "arithmetic" in msg
    assert "routers.c.tiers.0.gates.0.min_equations" in error(
        {"tiers": tiers("small", "large", gates=[{"kind": "arithmetic", "min_equations": -1}])})
    assert "routers.c.accept" in error({"tiers": tiers("small", "large"), "accept": "first"})
    assert "routers.c.tiers.0.fallbacks.0: bad value 'nope'" in error(
        {"tiers": [{"model": "small", "fallbacks": ["nope"]}, {"model": "large"}]})


def test_gates_on_the_last_tier_need_accept_best_and_best_needs_them() -> None:
    msg = error({"tiers": [{"model": "small", "gates": GATES}, {"model": "large", "gates": GATES}]})
    assert "routers.c.tiers.1.gates" in msg and "accept: best" in msg
    msg = error({"tiers": tiers("small", "large"), "accept": "best"})
    assert "routers.c.tiers.1.gates" in msg and "needs gates too" in msg
    c = config({"tiers": [{"model": "small", "gates": GATES}, {"model": "large", "gates": GATES}], "accept": "best"})
    route = build_routers(c)["c"].route(ChatRequest.from_prompt("q"))
    assert route.accept == "best" and [len(s.gates) for s in route.steps] == [2, 2]


def test_the_judge_rule_uses_the_model_the_tier_escalates_to() -> None:
    # medium judging small is fine when small escalates to medium...
    config({"tiers": [
        {"model": "small", "gates": [{"kind": "judge", "model": "medium"}]},
        {"model": "medium", "gates": [{"kind": "judge", "model": "large"}]}, {"model": "large"}]})
    # ...and refused when small escalates straight to large.
    msg = error({"tiers": [{"model": "small", "gates": [{"kind": "judge", "model": "medium"}]}, {"model": "large"}]})
    assert "routers.c.tiers.0.gates.0.model" in msg and "ranks below 'large'" in msg
    assert "routers.c.tiers.0.gates.0.model: bad value 'oracle'" in error(
        {"tiers": [{"model": "small", "gates": [{"kind": "judge", "model": "oracle"}]}, {"model": "large"}]})


def test_start_router_must_exist_pick_tiers_and_not_delegate() -> None:
    rules = {"kind": "rules", "default": "small", "rules": []}
    assert "routers.c.start.router: bad value 'r'" in error({"tiers": tiers("small", "large"), "start": {"router": "r"}})
    assert "routers.c.start.router: bad value 'c'" in error({"tiers": tiers("small", "large"),
                                                             "start": {"router": "c"}})
    # Refused when the config is checked (check-config), not only when the routers are built (serve).
    picks_medium = {"models": MODELS, "routers": {"c": {"kind": "cascade", "tiers": tiers("small", "large"),
                                                        "start": {"router": "r"}}, "r": {**rules, "default": "medium"}}}
    for check in (lambda: build_routers(shape_only(picks_medium)), lambda: parse_config(picks_medium)):
        with pytest.raises(ConfigError, match=r"routers.c.start.router: router 'r' may pick \['medium'\]"):
            check()
    c = config({"tiers": tiers("small", "large"), "start": {"router": "r"}}, r=rules)
    assert build_routers(c)["c"].route(ChatRequest.from_prompt("q")).reason.startswith("cascade: start tier 1 (small)")


def test_a_learned_gate_artifact_that_is_missing_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        config({"tiers": tiers("small", "large", gates=[{"kind": "learned", "artifact": "gate.json"}])}, tmp_path)
    assert "routers.c.tiers.0.gates.0.artifact" in str(e.value) and str(tmp_path / "gate.json") in str(e.value)


def test_route_lists_the_tiers_with_gates_and_fallbacks() -> None:
    c = parse_config({"models": MODELS, "routers": {"c": {"kind": "cascade", "fallbacks": ["medium"], "tiers": [
        {"model": "small", "gates": GATES}, {"model": "large", "fallbacks": []}]}}})
    route = build_routers(c)["c"].route(ChatRequest.from_prompt("q"))
    assert [s.model for s in route.steps] == ["small", "large"]
    assert [g.name for g in route.steps[0].gates] == ["arithmetic", "final_answer"]
    assert route.steps[0].fallbacks == ("medium",) and route.steps[1].fallbacks == ()
    assert route.steps[1].gates == ()
    assert route.reason == "cascade: small[arithmetic,final_answer] -> large"


def test_budget_skips_tiers_from_the_back_keeping_the_cheap_first_tier() -> None:
    c = config({"tiers": tiers("small", "medium", "large")})
    router = build_routers(c)["c"]
    assert isinstance(router, CascadeRouter)
    executor = Executor(c, {})
    router.attach(executor)
    tracker = executor.latency
    for ms in (400, 500, 600):
        tracker.observe("small", ms)
        tracker.observe("medium", 2 * ms)
        tracker.observe("large", 3 * ms)
    tracker.observe("gate:arithmetic", 1.0)

    def path(budget: str | None) -> tuple[list[str], str]:
        meta = {} if budget is None else {"latency_budget_ms": budget}
        r = router.route(ChatRequest.from_prompt("q", meta))
        return [s.model for s in r.steps], r.reason

    assert path(None)[0] == ["small", "medium", "large"]
    assert path("3100")[0] == ["small", "medium", "large"]  # 501 + 1001 + 1500 fits
    steps, reason = path("2500")  # all three do not fit; medium goes, the cheap first tier stays
    assert steps == ["small", "large"]
    assert "skip tier 2 (medium): expected 1001ms + 1500ms after it > 2500ms" in reason
    steps, reason = path("1000")  # only the last tier is left, and even it is over budget
    assert steps == ["large"] and "tier 3 (large) alone expects 1500ms" in reason
    with pytest.raises(BadRequest):
        path("-5")
