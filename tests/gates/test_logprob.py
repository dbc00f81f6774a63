"""The logprob gate: confidence from OpenAI token logprobs, the final-answer span, recorded logprobs."""

from __future__ import annotations

import math
from typing import Any

import pytest

from gearshift.errors import ConfigError
from gearshift.gates import build_gate
from gearshift.gates.logprob import LogprobGate, answer_span, recorded_completion, token_logprobs
from gearshift.request import ChatRequest

REQ = ChatRequest.from_prompt("How many apples?")


def completion(tokens: list[tuple[str, float]]) -> dict[str, Any]:
    """A chat.completion with OpenAI's `logprobs: true` structure."""
    text = "".join(t for t, _ in tokens)
    content = [{"token": t, "logprob": lp, "bytes": list(t.encode()),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}]} for t, lp in tokens]
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": {"content": content, "refusal": None}, "finish_reason": "stop"}]}


ANSWER = [("So", -0.1), (" 2", -0.2), (" x", -0.1), (" 7", -0.1), (" =", -0.0), (" 14", -0.3),
          (".\n", -0.1), ("####", -0.05), (" 1", -2.0), ("4", -1.0)]
TEXT = "".join(t for t, _ in ANSWER)


def test_the_registry_finds_it_and_options_are_checked() -> None:
    gate = build_gate({"kind": "logprob", "threshold": 0.5})
    assert isinstance(gate, LogprobGate) and gate.threshold == 0.5 and gate.needs_logprobs
    assert build_gate("logprob").threshold == 0.8
    with pytest.raises(ConfigError, match="span"):
        build_gate({"kind": "logprob", "span": "middle"})


def test_mean_and_min_token_logprob_map_to_a_confidence() -> None:
    mean = sum(lp for _, lp in ANSWER) / len(ANSWER)
    v = build_gate({"kind": "logprob", "threshold": 0.5}).check(REQ, TEXT, completion(ANSWER))
    assert v.score == pytest.approx(math.exp(mean)) and v.passed
    v = build_gate({"kind": "logprob", "measure": "min", "threshold": 0.5}).check(REQ, TEXT, completion(ANSWER))
    assert v.score == pytest.approx(math.exp(-2.0)) and not v.passed


def test_the_final_answer_span_reads_only_the_final_number_tokens() -> None:
    assert answer_span(ANSWER, TEXT) == [(" 1", -2.0), ("4", -1.0)]
    v = build_gate({"kind": "logprob", "span": "final_answer", "threshold": 0.5}).check(REQ, TEXT, completion(ANSWER))
    assert v.score == pytest.approx(math.exp(-1.5)) and not v.passed
    assert "final number" in v.reasons[0]
    # No final number stated: the whole answer is read, and the reason says so.
    plain = [("Fourteen", -0.1), (" apples", -0.1)]
    v = build_gate({"kind": "logprob", "span": "final_answer"}).check(REQ, "Fourteen apples", completion(plain))
    assert v.score == pytest.approx(math.exp(-0.1)) and "no final number" in v.reasons[0]


def test_no_logprobs_fails_so_the_request_escalates() -> None:
    body = {"choices": [{"message": {"content": "14"}, "logprobs": None}]}
    for c in (None, body):
        v = build_gate("logprob").check(REQ, "14", c)
        assert not v.passed and v.error == "no_logprobs"
    assert token_logprobs(body) is None


def test_a_recorded_mean_logprob_drives_the_gate_offline() -> None:
    gate = build_gate({"kind": "logprob", "threshold": 0.7})
    assert gate.check(REQ, "14", recorded_completion("14", -0.1)).passed
    v = gate.check(REQ, "14", recorded_completion("14", -1.0))
    assert not v.passed and v.score == pytest.approx(math.exp(-1.0))
    # The column is the whole answer's mean: another measure cannot be calibrated on it.
    with pytest.raises(ValueError, match="mean logprob of the whole answer"):
        build_gate({"kind": "logprob", "measure": "min"}).check(REQ, "14", recorded_completion("14", -0.1))
