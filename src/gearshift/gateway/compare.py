"""Scoring a shadow pair: is the routed answer as good as the reference model's?

Programmatic where the output is structured (same tool call, equal JSON, same final answer),
else a pairwise judge when one is configured, else unscored (stored, not counted).
"""

from __future__ import annotations

import json
import re
from typing import Any

from gearshift.request import ChatRequest

# The unmarked fallback of `final_answer`: the answer's last number.
_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")


def _tool_calls(body: dict[str, Any] | None) -> list[tuple[Any, Any]] | None:
    try:
        calls = body["choices"][0]["message"].get("tool_calls") if body else None
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    if not calls:
        return None
    out = []
    for c in calls:
        fn = c.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            args = fn.get("arguments")
        out.append((fn.get("name"), args))
    return sorted(out, key=lambda x: (str(x[0]), json.dumps(x[1], sort_keys=True)))


def _json(text: str) -> Any:
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[-1].rsplit("```", 1)[0]
    try:
        value = json.loads(t)
    except ValueError:
        return None
    return value if isinstance(value, (dict, list)) else None


def final_answer(text: str, marked_only: bool = True) -> float | None:
    """The answer's final number: one stated with a marker (the final_answer gate's reading: `#### 18`,
    `the answer is 18`, `\\boxed{18}`), else, when allowed, the last number."""
    from gearshift.gates.arithmetic import final_number, number_value

    marked = final_number(text)
    if marked is not None:
        return number_value(marked)
    if marked_only:
        return None
    numbers = _NUMBER.findall(text)
    return number_value(numbers[-1]) if numbers else None


def compare(request: ChatRequest, answer: str, reference: str, answer_body: dict[str, Any] | None = None,
            reference_body: dict[str, Any] | None = None, method: str = "auto") -> dict[str, Any] | None:
    """A verdict dict {method, passed, score, reasons} for a pair, or None when only a judge could tell."""
    if method == "recorded":
        return recorded(answer_body, reference_body)
    if method in ("auto", "tool_call"):
        a, r = _tool_calls(answer_body), _tool_calls(reference_body)
        if a is not None or r is not None:
            same = a == r
            return {"method": "tool_call", "passed": same, "score": float(same),
                    "reasons": [] if same else ["tool calls differ"]}
    if method in ("auto", "json"):
        rf = request.body.get("response_format")
        wants_json = isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
        ja, jr = _json(answer), _json(reference)
        if (wants_json or method == "json") or (ja is not None and jr is not None):
            same = ja is not None and ja == jr
            return {"method": "json", "passed": same, "score": float(same),
                    "reasons": [] if same else ["JSON differs" if ja is not None else "answer is not JSON"]}
    if method in ("auto", "final_answer"):
        fa = final_answer(answer, marked_only=method == "auto")
        fr = final_answer(reference, marked_only=method == "auto")
        if fr is not None and (fa is not None or method == "final_answer"):
            same = fa is not None and abs(fa - fr) <= 1e-6 * max(1.0, abs(fr))
            return {"method": "final_answer", "passed": same, "score": float(same),
                    "reasons": [] if same else [f"final answer {fa} vs reference {fr}"]}
    return None


def recorded_grades(answer_body: dict[str, Any] | None,
                    reference_body: dict[str, Any] | None) -> tuple[float, float] | None:
    """(answer, reference): the recorded qualities `replay` models report of both answers; None without them."""
    qa, qr = (((b or {}).get("gearshift_replay") or {}).get("quality") for b in (answer_body, reference_body))
    if not isinstance(qa, (int, float)) or not isinstance(qr, (int, float)):
        return None
    return float(qa), float(qr)


def recorded(answer_body: dict[str, Any] | None, reference_body: dict[str, Any] | None) -> dict[str, Any] | None:
    """The pair scored from the recorded quality `replay` models report: the candidate is as good as the
    reference when its quality is at least the reference's (else the ratio of the two); None without them."""
    grades = recorded_grades(answer_body, reference_body)
    if grades is None:
        return None
    qa, qr = grades
    score = 1.0 if qa >= qr else qa / qr
    return {"method": "recorded", "passed": score >= 1.0, "score": score,
            "reasons": [] if score >= 1.0 else [f"recorded quality {qa:g} below the reference's {qr:g}"]}


PAIRWISE_PROMPT = """You compare two answers to the same request. The reference answer comes from a strong model.
Decide whether the candidate answer is as good as the reference for the user: correct, complete and useful.
Minor differences in wording or length do not matter.

[Request]
{question}

[Reference answer]
{reference}

[Candidate answer]
{answer}

Reply with one word: PASS if the candidate is as good as the reference, FAIL otherwise."""


RESOLVE_PROMPT = """Two answers to the same request disagree. Grade each answer on its own: is it correct and does
it do what the request asks? Both may be right, or both wrong.

[Request]
{question}

[Answer 1]
{answer}

[Answer 2]
{reference}

Reply with two lines and nothing else:
1: PASS or FAIL
2: PASS or FAIL"""

_RESOLVED = re.compile(r"(?im)^\W*(?:answer\s*)?([12])\W*[:=\-]?\s*\W*(PASS|FAIL)\b")


def parse_resolution(text: str) -> tuple[float, float] | None:
    """(answer 1, answer 2) grades from a RESOLVE_PROMPT reply, or None when it names neither clearly."""
    grades: dict[str, float] = {}
    for n, word in _RESOLVED.findall(text or ""):
        grades.setdefault(n, 1.0 if word.upper() == "PASS" else 0.0)
    if len(grades) != 2:
        return None
    return grades["1"], grades["2"]
