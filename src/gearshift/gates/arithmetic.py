"""Arithmetic gates: do the equations an answer shows hold, and does it state a final number?

Both are cheap signals that a math answer is wrong (measured on GSM8K, see tests/gates/test_arithmetic.py).
`arithmetic` recomputes the equations an answer writes (gates/equations.py finds and checks them).
`final_answer` checks that a final number is stated (`#### 18`, `The answer is 18`,
`\\boxed{18}`).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from gearshift.gates.base import Gate, GateOptions
from gearshift.gates.equations import CLEAN, find_equations
from gearshift.request import ChatRequest
from gearshift.trace import Verdict


class ArithmeticOptions(GateOptions):
    # 1e-12, not 1e-6: with 1e-6, `999 * 1,001 = 1,000,000` would pass. Shown decimals get their own
    # rounding tolerance.
    rel_tol: float = Field(default=1e-12, gt=0, lt=1, description="relative tolerance of an equation")
    integer_rounding: bool = Field(default=True, description="accept a quotient rounded to a whole number "
                                                              "(73 / 8 = 9 boxes)")
    min_equations: int = Field(default=0, ge=0,
                               description="fail when fewer equations are shown (0: no equations passes)")


class ArithmeticGate(Gate[ArithmeticOptions]):
    """Score = the fraction of shown equations that hold; default threshold 1 (any wrong one fails)."""

    kind = "arithmetic"
    Options = ArithmeticOptions
    default_threshold = 1.0

    def check(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        opts = self.options
        eqs = find_equations(answer, opts.rel_tol, opts.integer_rounding)
        if len(eqs) < opts.min_equations:
            return self.verdict(0.0, [f"{len(eqs)} equation(s) shown, {opts.min_equations} required"])
        if not eqs:
            return self.verdict(1.0, ["no equations to check"])
        bad = [e for e in eqs if not e.holds]
        score = 1.0 - len(bad) / len(eqs)
        reasons = [e.describe() for e in bad] or [f"{len(eqs)} equation(s) hold"]
        return self.verdict(score, reasons)


# ---------------------------------------------------------------------------------------------
# Final answer
# ---------------------------------------------------------------------------------------------

_FINAL_NUM = r"-?[$€£]?\s?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:\s?/\s?\d+)?%?"
# (pattern, a lower-case literal that must occur for it to match: a cheap filter, since
# case-insensitive searches are slow).
_FINAL_PATTERNS = (
    (re.compile(rf"####\s*\**\s*({_FINAL_NUM})"), "####"),
    (re.compile(rf"\\boxed\{{\s*({_FINAL_NUM})\s*\}}"), "\\boxed"),
    (re.compile(rf"(?i)\bfinal answer\b[^0-9\n$-]{{0,20}}({_FINAL_NUM})"), "final answer"),
    (re.compile(rf"(?i)\bthe answer is\b[^0-9\n$-]{{0,20}}({_FINAL_NUM})"), "answer is"),
)


def final_number(answer: str, pattern: re.Pattern[str] | None = None) -> str | None:
    """The final number an answer states with a marker (`#### 18`, `\\boxed{18}`, `the answer is
    18`, or a custom pattern whose group 1 is the number); the last such statement wins."""
    low = answer.lower()
    patterns = ((pattern, ""),) if pattern is not None else _FINAL_PATTERNS
    for p, literal in patterns:
        if literal not in low:
            continue
        last = None
        for last in p.finditer(answer):  # noqa: B007 - we want the last match
            pass
        if last is not None:
            return last.group(1)
    return None


def number_value(text: str) -> float | None:
    """The value of a stated number (`$1,200`, `-3.5`, `2/3`, `40%` is 40), None if unreadable."""
    s = text.translate(CLEAN).rstrip("%")
    try:
        if "/" in s:
            a, b = s.split("/", 1)
            return float(a) / float(b)
        return float(s)
    except (ValueError, ZeroDivisionError):
        return None


_ANY_NUMBER = re.compile(_FINAL_NUM)
# Signs of an answer cut off by the token limit: an unclosed `<<48/2=` annotation, or a number
# broken inside its thousands groups (`$130,00`).
_CUT_OFF = re.compile(r"\d,\d{0,2}\Z")


class FinalAnswerOptions(GateOptions):
    pattern: str | None = Field(default=None, description="regex whose group 1 is the final number")
    integer: bool = Field(default=False, description="the final number must be a whole number")
    require_marker: bool = Field(
        default=False,
        description="the number must follow a marker (#### 18, \\boxed{18}, the answer is 18); "
                    "false: a number on the last line will do")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                p = re.compile(v)
            except re.error as e:
                raise ValueError(f"pattern {v!r} does not compile: {e}") from None
            if p.groups < 1:
                raise ValueError(f"pattern {v!r} needs a group capturing the number, e.g. '#### (\\S+)'")
        return v


class FinalAnswerGate(Gate[FinalAnswerOptions]):
    """Passes when the answer states a final number (and, with `integer: true`, a whole one): after a
    marker (`#### 18`, `\\boxed{18}`, `the answer is 18`) or, unless `require_marker`, as the last
    number of the last line.

    An answer cut off by the token limit (`finish_reason: length`, an unclosed `<<` annotation, a
    number broken inside its thousands groups like `$130,00`) fails whatever it ends with."""

    kind = "final_answer"
    Options = FinalAnswerOptions
    default_threshold = 1.0

    def __init__(self, options: FinalAnswerOptions) -> None:
        super().__init__(options)
        self.pattern = re.compile(options.pattern) if options.pattern else None

    def check(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        opts = self.options
        if _finish_reason(completion) == "length":
            return self.verdict(0.0, ["answer was cut off (finish_reason: length)"])
        tail = answer.rstrip()
        if tail.rfind("<<") > tail.rfind(">>") or _CUT_OFF.search(tail[-8:]):
            return self.verdict(0.0, ["answer was cut off"])
        found = final_number(answer, self.pattern)
        if found is None and not opts.require_marker:
            # The last number of the last line (of its last 300 characters: the end is what counts).
            numbers = _ANY_NUMBER.findall(tail[max(tail.rfind("\n") + 1, len(tail) - 300):])
            found = numbers[-1] if numbers else None
        if found is None:
            return self.verdict(0.0, ["no final numeric answer"])
        value = number_value(found)
        if value is None:
            return self.verdict(0.0, [f"final answer {found!r} is not a number"])
        if opts.integer and abs(value - round(value)) > 1e-9:
            return self.verdict(0.0, [f"final answer {found.strip()} is not a whole number"])
        return self.verdict(1.0, [f"final answer {found.strip()}"])


def _finish_reason(completion: dict[str, Any] | None) -> str | None:
    try:
        reason = completion["choices"][0].get("finish_reason")  # type: ignore[index]
        return reason if isinstance(reason, str) else None
    except (TypeError, KeyError, IndexError, AttributeError):
        return None
