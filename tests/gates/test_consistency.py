"""The self-consistency gate: agreement of k answers, samples through an injected caller, failures."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from gearshift.config import ModelConfig, Price
from gearshift.errors import ConfigError, UpstreamError
from gearshift.gates import build_gate
from gearshift.gates.consistency import ConsistencyGate, answer_key
from gearshift.lab.gating import gate_scores
from gearshift.outcomes.table import Outcomes
from gearshift.request import ChatRequest
from gearshift.trace import Call

MODELS = {"cheap": ModelConfig(name="cheap", provider="openai", price=Price(input=1, output=1), rank=1)}
REQ = ChatRequest(body={"model": "x", "messages": [{"role": "user", "content": "2 x 7?"}], "stream": True,
                        "logprobs": True})


def gate(samples: list[Any], **opts: Any) -> tuple[ConsistencyGate, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    queue = list(samples)

    async def call(model: str, body: dict[str, Any]) -> tuple[str, Call]:
        sent.append(body)
        s = queue.pop(0)
        if isinstance(s, Exception):
            raise s
        return s, Call(model=model, role="judge", cost_usd=0.01)

    g = build_gate({"kind": "self_consistency", "model": "cheap", **opts}, MODELS)
    assert isinstance(g, ConsistencyGate)
    g.call = call
    return g, sent


def test_answers_agree_on_their_final_number_or_their_text() -> None:
    assert answer_key("so 2 x 7 = 14.\n#### 14") == answer_key("The answer is $14.00") == "#14"
    assert answer_key("Paris.") == answer_key("  paris ") == "paris"
    assert answer_key("Paris", "number") == ""


def test_agreement_decides_and_every_sample_is_a_gate_call() -> None:
    g, sent = gate(["#### 14", "The answer is 14"])
    v = asyncio.run(g.acheck(REQ, "#### 14"))
    assert v.passed and v.score == 1.0 and len(v.calls) == 2
    assert [c.role for c in v.calls] == ["gate", "gate"] and v.cost_usd == pytest.approx(0.02)
    assert all(b["model"] == "cheap" and "stream" not in b and "logprobs" not in b for b in sent)
    g, _ = gate(["#### 14", "#### 15"])
    assert asyncio.run(g.acheck(REQ, "#### 14")).score == pytest.approx(2 / 3)
    g, _ = gate(["#### 15", "#### 15"])
    v = asyncio.run(g.acheck(REQ, "#### 14"))
    assert not v.passed and v.score == pytest.approx(1 / 3)


def test_failed_samples_disagree_and_all_failing_fails_the_gate() -> None:
    err = UpstreamError("boom", status=502)
    g, _ = gate([err, "#### 14"])
    v = asyncio.run(g.acheck(REQ, "#### 14"))
    assert v.score == pytest.approx(2 / 3) and "1 sample call(s) failed" in v.reasons[0]
    g, _ = gate([err, err])
    v = asyncio.run(g.acheck(REQ, "#### 14"))
    assert not v.passed and v.error == "samples_failed" and not v.calls


def test_options_are_checked_and_the_lab_refuses_it() -> None:
    with pytest.raises(ConfigError, match="model: bad value 'nope'"):
        build_gate({"kind": "self_consistency", "model": "nope"}, MODELS)
    with pytest.raises(ConfigError, match="k"):
        build_gate({"kind": "self_consistency", "model": "cheap", "k": 1}, MODELS)
    o = Outcomes(prompts=np.array(["q"], dtype=object), models=["cheap"], quality=np.ones((1, 1)),
                 cost=np.ones((1, 1)), responses=np.array([["#### 1"]], dtype=object))
    with pytest.raises(ValueError, match="cannot replay it on recorded text"):
        gate_scores([build_gate({"kind": "self_consistency", "model": "cheap"}, MODELS)], o, "cheap")
