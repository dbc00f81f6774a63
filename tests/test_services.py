"""The executor's services reach routers and gates through one declared hook, `attach(services)`."""

from __future__ import annotations

import asyncio
from typing import Any

from gearshift.config import parse_config
from gearshift.gates.judge import JudgeGate
from gearshift.plan import build_routers
from gearshift.request import ChatRequest
from gearshift.routers.cascade import CascadeRouter
from gearshift.services import Services
from gearshift.trace import Call

MODELS = {
    "small": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "price": {"input": 1, "output": 2}, "rank": 1},
    "large": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "price": {"input": 10, "output": 30},
              "rank": 9},
}


class Lent:
    """Services as a test lends them: a judge that always passes, and fixed latencies."""

    def __init__(self, latencies: dict[str, float]) -> None:
        self.latencies = latencies
        self.asked: list[str] = []

    async def call_model(self, model: str, body: dict[str, Any]) -> tuple[str, Call]:
        self.asked.append(model)
        return "Verdict: PASS", Call(model=model, role="judge", cost_usd=0.001)

    def expected_latency(self, key: str, quantile: float = 0.5) -> float | None:
        return self.latencies.get(key)


def test_every_router_takes_attach_and_a_cascade_lends_it_to_its_gates() -> None:
    config = parse_config({"models": MODELS, "routers": {
        "fixed": {"kind": "fixed", "model": "small"},
        "c": {"kind": "cascade", "tiers": [
            {"model": "small", "gates": [{"kind": "arithmetic"}, {"kind": "judge", "model": "large"}]},
            {"model": "large"}]}}})
    routers = build_routers(config)
    lent = Lent({"small": 900.0, "large": 400.0, "gate:arithmetic": 1.0})
    services: Services = lent
    for r in routers.values():
        r.attach(services)  # the default hook does nothing; no router needs a getattr
    cascade = routers["c"]
    assert isinstance(cascade, CascadeRouter)
    judge = cascade.gates[0][1]
    assert isinstance(judge, JudgeGate)
    verdict = asyncio.run(judge.acheck(ChatRequest.from_prompt("2 + 2?"), "4"))
    assert verdict.passed and lent.asked == ["large"] and verdict.cost_usd == 0.001
    # Latency budgets read the lent latencies: small (900) + large (400) breaks 1000 ms, so tier 1 goes.
    route = cascade.route(ChatRequest.from_prompt("q", {"latency_budget_ms": "1000"}))
    assert [s.model for s in route.steps] == ["large"]
    assert "skip tier 1 (small)" in route.reason
