"""The gate interface: registry, build_gate's validation and errors, verdicts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import Field

from gearshift.errors import ConfigError
from gearshift.gates import GATES, Gate, GateOptions, Verdict, build_gate, register
from gearshift.request import ChatRequest
from gearshift.trace import Call

REQ = ChatRequest.from_prompt("hi")


def test_registry_has_every_kind() -> None:
    build_gate("length")  # loads every kind
    assert {"length", "json_schema", "regex", "contains", "refusal", "tool_calls", "arithmetic", "final_answer",
            "judge"} <= set(GATES)


@pytest.mark.parametrize(("spec", "messages"), [
    ({"kind": "lenght"}, ["gate.kind: bad value 'lenght'; allowed: ['arithmetic',"]),
    ({"min": 3}, ["gate.kind: required key is missing"]),
    (["length"], ["a gate is a mapping with `kind:`"]),
    ({"kind": "length", "minimum": 3},
     ["gate.minimum: unknown key for gate kind length; allowed keys: kind, max, min, name, threshold, unit"]),
    ({"kind": "length", "min": -1}, ["gate.min: Input should be greater than or equal to 0 (got -1)"]),
    ({"kind": "length", "min": 9, "max": 3}, ["max (3) is below min (9)"]),
    ({"kind": "length", "unit": "words"}, ["gate.unit: unit 'words': allowed: chars, tokens"]),
    ({"kind": "length", "threshold": 1.5}, ["gate.threshold: Input should be less than or equal to 1"]),
    ({"kind": "regex"}, ["give must_match and/or must_not_match"]),
    ({"kind": "regex", "must_match": ["ok", "(unclosed"]}, ["gate.must_match: pattern '(unclosed' does not compile"]),
    ({"kind": "contains"}, ["give at least one of any, all, none"]),
    ({"kind": "final_answer", "pattern": "#### \\S+"}, ["needs a group capturing the number"]),
    ({"kind": "json_schema", "schema": {"type": "objekt"}}, ["gate.schema: schema is not a valid JSON Schema"]),
])
def test_build_gate_errors_name_the_key(spec: Any, messages: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        build_gate(spec)
    for m in messages:
        assert m in str(err.value)


def test_where_prefixes_errors() -> None:
    with pytest.raises(ConfigError, match=r"routers\.cascade\.steps\.0\.gates\.2\.max"):
        build_gate({"kind": "length", "max": "lots"}, where="routers.cascade.steps.0.gates.2")


def test_name_and_threshold() -> None:
    gate = build_gate({"kind": "regex", "must_match": ["a", "b"], "name": "has-ab", "threshold": 0.5})
    v = gate.check(REQ, "a only")
    assert (v.gate, v.score, v.passed) == ("has-ab", 0.5, True)
    assert build_gate({"kind": "regex", "must_match": ["a", "b"]}).threshold == 1.0


def test_verdict_to_dict_for_traces() -> None:
    v = Verdict(gate="judge", passed=False, score=0.3, reasons=["meh"], cost_usd=0.01, latency_ms=5,
                calls=[Call(model="j", role="judge")], error=None)
    assert v.to_dict() == {"gate": "judge", "passed": False, "score": 0.3, "reasons": ["meh"], "cost_usd": 0.01,
                           "latency_ms": 5, "error": None}


def test_acheck_runs_check_for_programmatic_gates() -> None:
    gate = build_gate({"kind": "length", "min": 3})
    assert asyncio.run(gate.acheck(REQ, "long enough")).passed


class _WordsOptions(GateOptions):
    min_words: int = Field(default=1, ge=1)


def test_a_new_kind_is_one_class() -> None:
    @register
    class WordsGate(Gate):
        kind = "words_test"
        Options = _WordsOptions

        def check(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
            n = len(answer.split())
            return self.verdict(min(1.0, n / self.options.min_words), [f"{n} words"])  # type: ignore[attr-defined]

    try:
        gate = build_gate({"kind": "words_test", "min_words": 4})
        v = gate.check(REQ, "two words")
        assert (v.passed, v.score, v.reasons) == (False, 0.5, ["2 words"])
        with pytest.raises(ConfigError, match="min_words"):
            build_gate({"kind": "words_test", "min_words": 0})
    finally:
        GATES.pop("words_test", None)
