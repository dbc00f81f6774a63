"""Programmatic gates: length, json_schema, regex, contains, refusal, tool_calls."""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import pytest

from gearshift.errors import ConfigError
from gearshift.gates import build_gate, is_refusal, parse_json, strip_fences
from gearshift.request import ChatRequest

REQ = ChatRequest.from_prompt("Tell me.")


def _routerbench_answers(data_dir: Path, task: str) -> list[tuple[str, str, float | None]]:
    """(model, answer text, correctness) of every recorded answer of a RouterBench task."""
    csv.field_size_limit(10**9)
    out = []
    for split in ("train", "test"):
        with open(data_dir / "routerbench" / f"{task}_{split}.csv", newline="") as f:
            for row in csv.DictReader(f):
                for col, raw in row.items():
                    if not col.endswith("|model_response"):
                        continue
                    model = col.split("|")[0]
                    try:  # answers are stored as the repr of a list of strings
                        text = " ".join(ast.literal_eval(raw))
                    except (ValueError, SyntaxError):
                        text = raw
                    out.append((model, text, float(row[model]) if row[model] else None))
    return out


# ------------------------------------------------------------------------------------------
# length
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "answer", "passed"), [
    ({"min": 5}, "  hello  ", True),
    ({"min": 6}, "  hello  ", False),
    ({"max": 5}, "hello!", False),
    ({"min": 1, "max": 3, "unit": "tokens"}, "x" * 12, True),  # 12 chars ~ 3 tokens
    ({"max": 2, "unit": "tokens"}, "x" * 12, False),
    ({"min": 3}, "日本語", True),  # characters, not bytes
])
def test_length(spec: dict, answer: str, passed: bool) -> None:
    v = build_gate({"kind": "length", **spec}).check(REQ, answer)
    assert v.passed is passed and v.score == (1.0 if passed else 0.0)


def test_length_reasons_name_the_bound() -> None:
    v = build_gate({"kind": "length", "min": 20}).check(REQ, "short")
    assert v.reasons == ["5 characters, fewer than min 20"]


# ------------------------------------------------------------------------------------------
# json_schema
# ------------------------------------------------------------------------------------------

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
          "required": ["name", "age"], "additionalProperties": False}


def _json_request(schema: dict | None = None, kind: str = "json_schema") -> ChatRequest:
    rf: dict = {"type": kind}
    if schema is not None:
        rf["json_schema"] = {"name": "person", "schema": schema, "strict": True}
    return ChatRequest(body={"model": "m", "messages": [{"role": "user", "content": "who?"}], "response_format": rf})


@pytest.mark.parametrize(("text", "value"), [
    ('{"a": 1}', {"a": 1}),
    ('```json\n{"a": 1}\n```', {"a": 1}),
    ('```\n[1, 2]\n```', [1, 2]),
    # A fence inside a JSON string survives: only the outer fence is stripped.
    ('```json\n{"code": "```py\\nprint(1)\\n```"}\n```', {"code": "```py\nprint(1)\n```"}),
    ('  {"名前": "太郎", "emoji": "🚀"}  ', {"名前": "太郎", "emoji": "🚀"}),
])
def test_parse_json_strips_fences(text: str, value: object) -> None:
    assert parse_json(text) == (value, None)


def test_strip_fences_leaves_unfenced_text() -> None:
    assert strip_fences('{"a": "```"}') == '{"a": "```"}'


def test_prose_around_json_fails_unless_extract() -> None:
    text = 'Here you go:\n```json\n{"name": "Ada", "age": 36}\n```\nAnything else?'
    v = build_gate("json_schema").check(_json_request(PERSON), text)
    assert not v.passed and v.reasons[0].startswith("not valid JSON")
    assert build_gate({"kind": "json_schema", "extract": True}).check(_json_request(PERSON), text).passed


def test_schema_from_the_request() -> None:
    gate = build_gate("json_schema")
    assert gate.check(_json_request(PERSON), '{"name": "Ada", "age": 36}').passed
    v = gate.check(_json_request(PERSON), '{"name": "Ada", "age": -1, "extra": true}')
    assert not v.passed and v.score == 0.0
    assert any(r.startswith("$.age:") and "minimum" in r for r in v.reasons)
    assert any("extra" in r for r in v.reasons)
    v = gate.check(_json_request(PERSON), '[{"name": "Ada"}]')
    assert not v.passed and v.reasons == ["$: [{'name': 'Ada'}] is not of type 'object'"]


def test_json_object_and_no_response_format_check_validity_only() -> None:
    gate = build_gate("json_schema")
    assert gate.check(_json_request(kind="json_object"), '{"anything": [1, 2]}').passed
    assert gate.check(REQ, "[]").passed
    assert not gate.check(REQ, "{'single': 'quotes'}").passed
    assert not gate.check(REQ, '{"a": 1,}').passed


def test_configured_schema_overrides_the_request() -> None:
    gate = build_gate({"kind": "json_schema", "schema": {"type": "array", "maxItems": 2}})
    assert gate.check(_json_request(PERSON), "[1, 2]").passed
    v = gate.check(_json_request(PERSON), "[1, 2, 3]")
    assert not v.passed and "too long" in v.reasons[0]


def test_invalid_request_schema_is_not_blamed_on_the_answer() -> None:
    v = build_gate("json_schema").check(_json_request({"type": "no-such-type"}), '{"a": 1}')
    assert v.passed and v.error == "invalid_request_schema"


def test_invalid_configured_schema_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"gate\.schema: schema is not a valid JSON Schema"):
        build_gate({"kind": "json_schema", "schema": {"type": 12}})


def test_many_violations_are_capped() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    v = build_gate({"kind": "json_schema", "schema": schema}).check(REQ, json.dumps(list("abcdefgh")))
    assert len(v.reasons) == 6 and v.reasons[-1] == "... and 3 more schema violation(s)"
    assert v.reasons[0] == "$[0]: 'a' is not of type 'integer'"


# ------------------------------------------------------------------------------------------
# regex and contains
# ------------------------------------------------------------------------------------------


def test_regex() -> None:
    gate = build_gate({"kind": "regex", "must_match": [r"^#### \d+$", "total"], "must_not_match": r"(?i)sorry"})
    assert gate.check(REQ, "the total is\n#### 18").passed
    v = gate.check(REQ, "Sorry, the total is unknown")
    assert (v.passed, v.score) == (False, pytest.approx(1 / 3))
    assert v.reasons == ["no match for '^#### \\\\d+$'", "forbidden '(?i)sorry' matched 'Sorry'"]
    assert build_gate({"kind": "regex", "must_match": "TOTAL", "ignore_case": True}).check(REQ, "total").passed


def test_contains() -> None:
    gate = build_gate({"kind": "contains", "any": ["Paris", "París"], "all": ["France"], "none": ["I think"]})
    assert gate.check(REQ, "PARIS is the capital of france.").passed
    v = gate.check(REQ, "i THINK it is Lyon, France")
    assert v.score == pytest.approx(1 / 3)
    assert v.reasons == ["none of ['Paris', 'París'] found", "contains forbidden 'I think'"]
    assert gate.check(REQ, "Capital: PARÍS, FRANCE").passed  # unicode case folding
    words = build_gate({"kind": "contains", "none": ["no"], "whole_words": True})
    assert words.check(REQ, "Nothing is known").passed and not words.check(REQ, "No.").passed


# ------------------------------------------------------------------------------------------
# refusal
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "I can't help with that.",
    "I’m sorry, but I can’t assist with that request.",
    "I'm sorry, but I cannot provide instructions for that.",
    "As an AI language model, I do not have personal opinions.",
    "I cannot assist with creating malware.",
    "I apologize, but I won't be able to help with this.",
    "Unfortunately, I cannot answer questions about this person.",
    "I must decline to write that.",
    "I am unable to provide medical advice.",
    "I'm not able to share that information.",
    "Sure! ... wait. As an AI language model I should not do this.",  # anywhere in the answer
])
def test_refusals(text: str) -> None:
    v = build_gate("refusal").check(REQ, text)
    assert not v.passed and v.reasons[0].startswith("refusal:")


@pytest.mark.parametrize("text", [
    "A tuple cannot be changed once it is created, so we build a new one.",
    "If the number is negative, raise ValueError('Cannot compute the square root').",
    "I can help with that! Here is the function.",
    "Sorry for the confusion earlier: the answer is 42.",
    "The answer is B",
    "Unfortunately the train was late, so she arrived at 5 pm. #### 5",
    "",
])
def test_not_refusals(text: str) -> None:
    assert build_gate("refusal").check(REQ, text).passed


def test_extra_refusal_phrases() -> None:
    gate = build_gate({"kind": "refusal", "extra_phrases": [r"\bno comment\b"]})
    assert not gate.check(REQ, "No comment.").passed


def test_refusals_in_routerbench(data_dir: Path) -> None:
    """On 2,000+ recorded RouterBench prompts x 11 models: what the gate flags is wrong, and the many
    answers that say "cannot" in an explanation (MBPP code) are not flagged."""
    flagged: list[tuple[str, str, float | None]] = []
    for task in ("arc_challenge", "winograde"):
        flagged += [a for a in _routerbench_answers(data_dir, task) if is_refusal(a[1])]
    # Measured: 110 flagged (claude-v2's "Unfortunately I..." / "I apologize" openings), all graded wrong.
    assert 100 <= len(flagged) <= 130
    graded = [q for _, _, q in flagged if q is not None]
    assert graded and all(q == 0.0 for q in graded)
    mbpp = _routerbench_answers(data_dir, "mbpp")
    cannot = [a for a in mbpp if "cannot" in a[1].lower()]
    assert len(cannot) >= 50  # explanations like "a tuple cannot be modified"
    assert not any(is_refusal(text) for _, text, _ in mbpp)


def test_refusals_in_gsm8k(data_dir: Path) -> None:
    with open(data_dir / "routellm" / "gsm8k" / "gsm8k_responses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert not any(is_refusal(r["gpt-4-1106-preview_response"]) for r in rows)
    # Measured: one Mixtral answer declines ("I can't provide a single numerical answer"); it is wrong.
    flagged = [r for r in rows if is_refusal(r["mistralai/Mixtral-8x7B-Instruct-v0.1_response"])]
    assert 1 <= len(flagged) <= 3
    assert all(r["mistralai/Mixtral-8x7B-Instruct-v0.1"] == "False" for r in flagged)


# ------------------------------------------------------------------------------------------
# tool_calls
# ------------------------------------------------------------------------------------------

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"enum": ["c", "f"]}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def _tools_request(tool_choice: object = None) -> ChatRequest:
    body: dict = {"model": "m", "messages": [{"role": "user", "content": "weather in Oslo?"}],
                  "tools": [WEATHER, TIME]}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    return ChatRequest(body=body)


def _completion(*calls: tuple[str, str]) -> dict:
    tool_calls = [{"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
                  for i, (n, a) in enumerate(calls)]
    return {"choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None, "tool_calls": tool_calls}}]}


def test_tool_calls_well_formed() -> None:
    gate = build_gate("tool_calls")
    v = gate.check(_tools_request(), "", _completion(("get_weather", '{"city": "Oslo", "unit": "c"}'),
                                                     ("get_time", "{}")))
    assert v.passed and v.reasons == ["2 well-formed tool call(s)"]


@pytest.mark.parametrize(("call", "reason"), [
    (("get_wether", '{"city": "Oslo"}'), "not a declared tool"),
    (("get_weather", '{"city": "Oslo"'), "arguments are not valid JSON"),
    (("get_weather", '["Oslo"]'), "must be a JSON object"),
    (("get_weather", '{"unit": "k"}'), "'city' is a required property"),
    (("get_weather", '{"city": "Oslo", "country": "NO"}'), "Additional properties"),
])
def test_tool_calls_malformed(call: tuple[str, str], reason: str) -> None:
    v = build_gate("tool_calls").check(_tools_request(), "", _completion(call, ("get_time", "{}")))
    assert not v.passed and v.score == 0.5
    assert v.reasons[0].startswith("tool call 0:") and reason in v.reasons[0]


def test_tool_calls_required_and_forced() -> None:
    gate = build_gate("tool_calls")
    text_only = {"choices": [{"message": {"role": "assistant", "content": "It is sunny."}}]}
    assert gate.check(_tools_request(), "It is sunny.", text_only).passed
    assert not gate.check(_tools_request("required"), "It is sunny.", text_only).passed
    forced = {"type": "function", "function": {"name": "get_time"}}
    v = gate.check(_tools_request(forced), "", _completion(("get_weather", '{"city": "Oslo"}')))
    assert not v.passed and "tool_choice requires 'get_time'" in v.reasons[0]
    assert not build_gate({"kind": "tool_calls", "required": True}).check(_tools_request(), "", text_only).passed


def test_tool_calls_legacy_function_call() -> None:
    req = ChatRequest(body={"messages": [], "functions": [WEATHER["function"]]})
    comp = {"choices": [{"message": {"function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}}]}
    assert build_gate("tool_calls").check(req, "", comp).passed


def test_tool_calls_needs_the_completion() -> None:
    v = build_gate("tool_calls").check(_tools_request(), "text")
    assert not v.passed and v.error == "no_completion"
