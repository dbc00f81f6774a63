"""The LLM judge gate: parsing judgements, calling through an injected function, the capability rule."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gearshift.config import ModelConfig, Price
from gearshift.errors import ConfigError, UpstreamError
from gearshift.gates import JudgeGate, build_gate, check_judge_capability, parse_pass_fail, parse_score
from gearshift.request import ChatRequest
from gearshift.trace import Call


def _model(name: str, rank: int, price: float = 1.0) -> ModelConfig:
    return ModelConfig(name=name, provider="openai", price=Price(input=price, output=price), rank=rank)


MODELS = {"cheap": _model("cheap", 1, 0.6), "strong": _model("strong", 5, 30), "judge": _model("judge", 5, 10),
          "small-judge": _model("small-judge", 2, 0.2)}


# ------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "score"), [
    ("PASS", 1.0), ("FAIL", 0.0), ("pass", 1.0), ("fail.", 0.0), ("**PASS**", 1.0), ("`FAIL`", 0.0),
    ("Verdict: pass", 1.0), ("verdict: FAIL", 0.0), ("Verdict: **PASS**", 1.0), ("Judgement - fail", 0.0),
    ("The arithmetic is right.\n\nVerdict: PASS", 1.0),
    ("It would PASS a quick look, but the total is wrong.\nVerdict: FAIL", 0.0),  # the labelled one wins
    ("The answer is wrong, so it must FAIL.", 0.0),
    ('{"verdict": "pass", "reason": "ok"}', 1.0), ('{"pass": false}', 0.0),
    ('```json\n{"result": "FAIL"}\n```', 0.0), ("Decision: [PASS]", 1.0), ("Yes", 1.0), ("No.", 0.0),
    ("Result: correct", 1.0),
    ("", None), ("I am not sure.", None), ("The answer does not pass muster", None), ("Score: 7/10", None),
])
def test_parse_pass_fail(text: str, score: float | None) -> None:
    assert parse_pass_fail(text) == score


@pytest.mark.parametrize(("text", "score"), [
    ("7", 0.7), ("**8**", 0.8), ("Score: 7/10", 0.7), ("score: 7", 0.7), ("Rating: [[6]]", 0.6),
    ("[[10]]", 1.0), ('{"score": 8}', 0.8), ('{"rating": "9", "why": "good"}', 0.9), ("8 out of 10", 0.8),
    ("Overall score: **9**/10", 0.9), ("Score: 4/5", 0.8), ("Rating: 7.5", 0.75), ("Score (1-10): 3", 0.3),
    ("The answer is thorough and correct.\nRating: [[9]]", 0.9),
    ("First I thought 3/10, but on reflection: Rating: [[7]]", 0.7),  # the labelled score wins
    ("I'd give it a **6**.", 0.6), ("Grade: 0", 0.0),
    ("", None), ("Great answer!", None), ("Score: 11", None), ("Rating: [[15]]", None), ("PASS", None),
])
def test_parse_score(text: str, score: float | None) -> None:
    got = parse_score(text)
    assert got == (pytest.approx(score) if score is not None else None)


# ------------------------------------------------------------------------------------------
# Calling the judge
# ------------------------------------------------------------------------------------------


class Judge:
    """A small real judge function: answers from a script and records what it was sent."""

    def __init__(self, reply: str, cost: float = 0.0021, latency_ms: float = 180.0) -> None:
        self.reply = reply
        self.cost = cost
        self.latency_ms = latency_ms
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, model: str, body: dict[str, Any]) -> tuple[str, Call]:
        self.sent.append((model, body))
        await asyncio.sleep(0)
        return self.reply, Call(model=model, role="primary", input_tokens=300, output_tokens=20,
                                cost_usd=self.cost, latency_ms=self.latency_ms, response=self.reply)


REQ = ChatRequest.from_prompt("What is 48 / 2? Use {braces} freely.")


def _judge_gate(spec: dict[str, Any] | None = None, reply: str = "Verdict: PASS") -> tuple[JudgeGate, Judge]:
    gate = build_gate({"kind": "judge", "model": "judge", **(spec or {})}, MODELS)
    assert isinstance(gate, JudgeGate)
    fn = Judge(reply)
    return gate.bind(fn), fn


def test_judge_pass_carries_cost_latency_and_call() -> None:
    gate, fn = _judge_gate()
    v = asyncio.run(gate.acheck(REQ, "48 / 2 = 24. {\"json\": true}"))
    assert v.passed and v.score == 1.0 and v.error is None
    assert v.cost_usd == pytest.approx(0.0021) and v.latency_ms == pytest.approx(180.0)
    assert [(c.role, c.model) for c in v.calls] == [("judge", "judge")]
    model, body = fn.sent[0]
    assert model == "judge" and body["temperature"] == 0.0 and body["max_tokens"] == 400
    prompt = body["messages"][0]["content"]
    assert "What is 48 / 2? Use {braces} freely." in prompt and '48 / 2 = 24. {"json": true}' in prompt
    assert "Verdict: PASS" in prompt  # the default prompt asks for a parseable last line


def test_judge_fail() -> None:
    gate, _ = _judge_gate(reply="The division is wrong.\nVerdict: FAIL")
    v = asyncio.run(gate.acheck(REQ, "48 / 2 = 25"))
    assert not v.passed and v.score == 0.0 and v.error is None


def test_judge_scale_and_threshold() -> None:
    gate, fn = _judge_gate({"scale": "1-10"}, reply="Mostly right.\nRating: [[7]]")
    assert gate.threshold == 0.7
    v = asyncio.run(gate.acheck(REQ, "24"))
    assert v.passed and v.score == pytest.approx(0.7)
    assert "Rating: [[N]]" in fn.sent[0][1]["messages"][0]["content"]
    strict, _ = _judge_gate({"scale": "1-10", "threshold": 0.8}, reply="Rating: [[7]]")
    assert not asyncio.run(strict.acheck(REQ, "24")).passed


def test_unparseable_judgement_fails_and_is_counted() -> None:
    gate, _ = _judge_gate(reply="Hmm, hard to say.")
    v = asyncio.run(gate.acheck(REQ, "24"))
    assert not v.passed and v.error == "unparseable" and v.reasons[0] == "unparseable judgement"
    assert v.cost_usd > 0 and len(v.calls) == 1  # the judge was still paid for
    asyncio.run(gate.acheck(REQ, "24"))
    assert gate.counts["unparseable"] == 2


def test_custom_prompt_and_conversation() -> None:
    gate, fn = _judge_gate({"prompt": "Q: {question}\nA: {answer}\nSay PASS or FAIL."}, reply="PASS")
    req = ChatRequest(body={"messages": [{"role": "system", "content": "Be terse."},
                                         {"role": "user", "content": [{"type": "text", "text": "2+2?"}]}]})
    assert asyncio.run(gate.acheck(req, "4")).passed
    assert fn.sent[0][1]["messages"][0]["content"] == "Q: system: Be terse.\n\nuser: 2+2?\nA: 4\nSay PASS or FAIL."


def test_judge_call_failure_fails_the_gate() -> None:
    async def broken(model: str, body: dict[str, Any]) -> tuple[str, Call]:
        raise UpstreamError("upstream 503", status=502, retryable=True)

    gate = build_gate({"kind": "judge", "model": "judge"}, MODELS)
    v = asyncio.run(gate.bind(broken).acheck(REQ, "24"))  # type: ignore[attr-defined]
    assert not v.passed and v.error == "judge_failed" and "upstream 503" in v.reasons[0]


def test_unbound_judge_is_a_wiring_error() -> None:
    gate = build_gate({"kind": "judge", "model": "judge"}, MODELS)
    assert gate.offline is False
    with pytest.raises(RuntimeError, match="bind"):
        asyncio.run(gate.acheck(REQ, "24"))
    with pytest.raises(ValueError, match="recorded"):  # offline, a judge only replays recorded verdicts
        gate.check(REQ, "24")


def test_offline_a_judge_replays_its_recorded_verdict_at_its_own_threshold() -> None:
    from gearshift.gates.judge import RECORDED_JUDGE

    gate = build_gate({"kind": "judge", "model": "judge", "scale": "1-10", "threshold": 0.6}, MODELS)
    v = gate.check(REQ, "24", {RECORDED_JUDGE: {"score": 0.7, "cost_usd": 0.001, "latency_ms": 800.0}})
    assert v.passed and v.score == 0.7 and v.cost_usd == 0.001 and v.latency_ms == 800.0
    v = gate.check(REQ, "24", {RECORDED_JUDGE: {"score": 0.5, "cost_usd": None, "latency_ms": None}})
    # Below the threshold; the cost, not recorded, is estimated at the judge model's price.
    assert not v.passed and v.cost_usd == pytest.approx(gate.estimated_cost(REQ, "24")) and v.cost_usd > 0


@pytest.mark.parametrize(("spec", "message"), [
    ({"model": "nope"}, "routers.c.gates.0.model: bad value 'nope'; allowed: one of the models"),
    ({"model": "judge", "scale": "1-5"}, "routers.c.gates.0.scale"),
    ({"model": "judge", "prompt": "Rate {question}"}, "prompt must contain {answer}"),
    ({"model": "judge", "threshold": 7}, "routers.c.gates.0.threshold"),
    ({"model": "judge", "allow_weak": True}, "unknown key for gate kind judge"),
    ({}, "routers.c.gates.0.model: required key is missing"),
])
def test_judge_config_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_gate({"kind": "judge", **spec}, MODELS, where="routers.c.gates.0")
    assert message in str(err.value)


# ------------------------------------------------------------------------------------------
# The capability rule
# ------------------------------------------------------------------------------------------


def test_capable_judge_is_accepted() -> None:
    assert check_judge_capability(MODELS["judge"], MODELS["strong"], False) is None
    assert check_judge_capability(_model("better", 9), MODELS["strong"], False) is None


def test_weak_judge_is_refused_with_the_reason_and_the_override() -> None:
    with pytest.raises(ConfigError) as err:
        check_judge_capability(MODELS["small-judge"], MODELS["strong"], False, where="routers.cascade.gates.0")
    msg = str(err.value)
    assert msg.startswith("routers.cascade.gates.0.model:")
    assert "'small-judge' (rank 2) ranks below 'strong' (rank 5)" in msg
    assert "rarely catches its errors" in msg and "allow_weak_judge: true" in msg


def test_weak_judge_with_override_returns_a_warning() -> None:
    warning = check_judge_capability(MODELS["small-judge"], MODELS["strong"], True)
    assert warning is not None and "allow_weak_judge" in warning and "'small-judge' (rank 2)" in warning


def test_gate_checks_its_own_capability() -> None:
    weak = build_gate({"kind": "judge", "model": "small-judge"}, MODELS)
    with pytest.raises(ConfigError):
        weak.check_capability(MODELS["strong"])  # type: ignore[attr-defined]
    allowed = build_gate({"kind": "judge", "model": "small-judge", "allow_weak_judge": True}, MODELS)
    assert allowed.check_capability(MODELS["strong"])  # type: ignore[attr-defined]
    assert build_gate({"kind": "judge", "model": "judge"}, MODELS).check_capability(MODELS["strong"]) is None  # type: ignore[attr-defined]
