"""Arithmetic gates: do the equations an answer shows hold, and does it state a final number?

Both are cheap signals that a math answer is wrong (measured on GSM8K, see tests/test_gates_arithmetic.py).
`arithmetic` finds the equations an answer writes (GSM8K calculator annotations `<<48/2=24>>` and
inline `48 / 2 = 24`, `3 x $2 = $6`, `2,400 / 3 = 800`, `(12 / 20) x 100 = 60%`) and recomputes them
with a tiny evaluator: numbers, + - * / ^ and parentheses only, never `eval`, with a guard on huge
powers. `final_answer` checks that a final number is stated (`#### 18`, `The answer is 18`,
`\\boxed{18}`).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import Field, field_validator

from gearshift.gates.base import Gate, GateOptions, Verdict
from gearshift.request import ChatRequest

# ---------------------------------------------------------------------------------------------
# Finding equations
# ---------------------------------------------------------------------------------------------

# A number: thousands groups (2,400), plain digits, decimals; optional currency before, % after.
# `130,00` (a truncated `130,000`) is no number at all rather than 130.
_NUM = r"(?>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?!,\d)(?:\.\d+)?|\.\d+"
_ATOM = rf"(?:-(?=[$€£\d.]))?[$€£]?(?:{_NUM})%?"
# `x` multiplies only as a word of its own (3 x 60, 3x60), never inside a word (box, 2xy).
_OP = r"(?:\*\*|[-+*/^×÷·−–]|(?<![A-Za-z])[xX](?![A-Za-z]))"
_SP = r"[ \t]*+"
# Parentheses attach to atoms; spaces are consumed in one place only, and groups are atomic, so a
# failed match never backtracks exponentially over a long expression.
_TERM = rf"(?>(?:\({_SP})*+{_ATOM}(?:{_SP}\))*+)"
_EXPR = rf"{_TERM}(?:{_SP}{_OP}{_SP}{_TERM})*+"
# An equation is found from its sign: the left side is the longest expression ending just before it
# (searched in a short window of expression characters), the right side the longest one after it.
# Chains (a = b = c) yield every link.
_SIDE_CHARS = r"0-9.,$€£%()+\-*/^×÷·−–xX \t"
# An equation is found from its sign: the left side is the longest expression ending just before it,
# searched in the run of expression characters before the sign (found by matching the reversed
# text); the right side is the longest expression after it. Chains (a = b = c) yield every link.
_RUN = re.compile(rf"[{_SIDE_CHARS}]{{1,200}}")
_LHS = re.compile(rf"(?P<lhs>{_EXPR}){_SP}\Z")
_RHS = re.compile(rf"{_SP}(?P<rhs>{_EXPR})")
# GSM8K calculator annotations: <<48/2=24>>; the result usually repeats right after, in the text.
_ANNOTATION = re.compile(r"<<([^<>=\n]{1,200})=([^<>=\n]{1,60})>>")
_ANNOTATION_ANY = re.compile(r"<<[^<>\n]*>>")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_LATEX_SUBS = (("\\times", "×"), ("\\cdot", "·"), ("\\div", "÷"), ("\\*", "*"), ("\\$", "$"), ("\\%", "%"),
               ("\\(", " "), ("\\)", " "), ("\\[", " "), ("\\]", " "), ("\\left", ""), ("\\right", ""),
               ("{,}", ","))
# Markdown bold `**18**` is not a power: `**` is kept only between a number (or `)`) and a number.
_BOLD = re.compile(r"(?<![\d)])(?<![\d)][ \t])\*\*|\*\*(?![ \t]?[\d(.$])")
# Words in parentheses are labels: `3 (cats) + 9 (dogs) = 12`.
_LABEL = re.compile(r"[ \t]*\((?=[^()\d]*[A-Za-z])[^()\d\n]{1,40}\)")
_OP_CHARS = frozenset("+-*/^×÷·−–<>")
# `20% of $50` and `2/3 of 24` multiply.
_OF = re.compile(r"(%|\d/\d+)[ \t]+of[ \t]+(?=[$€£\d(])")
# A word that joins the left side to something we did not read: `divided by 4 = 2 + 1`.
_CONNECTORS = frozenset(("by", "times", "plus", "minus", "over"))

# ---------------------------------------------------------------------------------------------
# Evaluating expressions (no eval: a tokenizer and a shunting-yard over floats)
# ---------------------------------------------------------------------------------------------

# Groups: number, percent sign, operator, anything else (which makes the expression unreadable).
_TOKEN = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(%?)|(\*\*|[-+*/^()])|(.)")
_PLAIN = re.compile(r"(-?)(\d*)(?:\.(\d+))?(%?)")
_BINARY = re.compile(r"(\d+(?:\.\d+)?)([-+*/])(\d+(?:\.\d+)?)")
_CLEAN = str.maketrans({"$": None, "€": None, "£": None, ",": None, " ": None, "\t": None,
                        "×": "*", "·": "*", "x": "*", "X": "*", "÷": "/", "−": "-", "–": "-"})
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3, "^": 4, "**": 4}
MAX_EXPONENT = 1000.0  # a power beyond this is not arithmetic an answer shows; it is unverifiable
MAX_MAGNITUDE = 1e300


class Unverifiable(ValueError):
    """The expression cannot be checked (syntax we do not parse, overflow, huge power)."""


class DivisionByZero(ValueError):
    """The expression divides by zero: shown work that cannot be right."""


Token = tuple[str, str, str, str]  # re.findall's groups: (number, "%" or "", operator, other)


def _apply(op: str, vals: list[float]) -> None:
    if op == "neg":
        vals[-1] = -vals[-1]
        return
    if len(vals) < 2:
        raise Unverifiable("missing operand")
    b = vals.pop()
    a = vals[-1]
    if op == "+":
        vals[-1] = a + b
    elif op == "-":
        vals[-1] = a - b
    elif op == "*":
        vals[-1] = a * b
    elif op == "/":
        if b == 0:
            raise DivisionByZero("division by zero")
        vals[-1] = a / b
    else:  # power
        if abs(b) > MAX_EXPONENT:
            raise Unverifiable("exponent too large")
        try:
            vals[-1] = math.pow(a, b)
        except (OverflowError, ValueError):
            raise Unverifiable("power out of range") from None


def _evaluate_tokens(toks: list[Token], percent: bool) -> tuple[float, int]:
    """Shunting-yard over numbers, + - * / ^ (right-associative), unary minus and parentheses.
    Returns the value and the number of binary operators. `percent` reads `20%` as 0.2, else 20."""
    vals: list[float] = []
    ops: list[str] = []
    expect_operand = True
    binary = 0
    for num, pct, op, other in toks:
        if num:
            if not expect_operand:
                raise Unverifiable("two numbers in a row")
            v = float(num)
            vals.append(v / 100.0 if pct and percent else v)
            expect_operand = False
        elif other:
            raise Unverifiable(f"cannot read {other!r}")
        elif op == "(":
            if not expect_operand:
                raise Unverifiable("implicit multiplication")
            ops.append(op)
        elif op == ")":
            if expect_operand:
                raise Unverifiable("empty parentheses")
            while ops and ops[-1] != "(":
                _apply(ops.pop(), vals)
            if not ops:
                raise Unverifiable("unbalanced parentheses")
            ops.pop()
        elif expect_operand:
            if op == "-":
                ops.append("neg")
            elif op != "+":
                raise Unverifiable(f"operator {op!r} without a left operand")
        else:
            prec = _PREC[op]
            right = prec == 4  # powers associate to the right
            while ops and ops[-1] != "(" and (_PREC[ops[-1]] > prec or (_PREC[ops[-1]] == prec and not right)):
                _apply(ops.pop(), vals)
            ops.append(op)
            binary += 1
            expect_operand = True
    if expect_operand:
        raise Unverifiable("incomplete expression")
    while ops:
        op = ops.pop()
        if op == "(":
            raise Unverifiable("unbalanced parentheses")
        _apply(op, vals)
    v = vals[0]
    if len(vals) != 1 or not math.isfinite(v) or abs(v) > MAX_MAGNITUDE:
        raise Unverifiable("out of range")
    return v, binary


def _balanced(toks: list[Token]) -> list[Token]:
    """Drop unmatched parentheses at the edges: `(so 16 - 3 = 13)` captures `16 - 3` and `13)`."""
    depth = low = 0
    for t in toks:
        if t[2] == "(":
            depth += 1
        elif t[2] == ")":
            depth -= 1
            low = min(low, depth)
    if depth == 0 and low == 0:
        return toks
    start, end = 0, len(toks)
    extra_close, extra_open = -low, depth - low
    while extra_close and end > start and toks[end - 1][2] == ")":
        end -= 1
        extra_close -= 1
    while extra_open and start < end and toks[start][2] == "(":
        start += 1
        extra_open -= 1
    if extra_close or extra_open:
        raise Unverifiable("unbalanced parentheses")
    return toks[start:end]


def _values(cleaned: str, lenient: bool = True) -> tuple[list[float], int | None, int]:
    """Readings of a cleaned expression (see _CLEAN), the decimals it shows when it is a lone
    number, and its number of binary operators. `20%` reads as 0.2 and, when a % is shown, also
    as 20, since answers write both `20% x 50 = 10` and `100 - 20 = 80%`."""
    m = _PLAIN.fullmatch(cleaned)
    if m is not None and (m.group(2) or m.group(3)):  # the common case: a lone number
        v = float(cleaned.rstrip("%"))
        if not abs(v) <= MAX_MAGNITUDE:
            raise Unverifiable("out of range")
        return ([v / 100.0, v] if m.group(4) else [v]), len(m.group(3) or ""), 0
    m = _BINARY.fullmatch(cleaned)
    if m is not None:  # the next most common: `48/2`
        a, op, b = float(m.group(1)), m.group(2), float(m.group(3))
        if op == "/" and b == 0:
            raise DivisionByZero("division by zero")
        return [a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a / b], None, 1
    toks = _TOKEN.findall(cleaned)
    if lenient:
        toks = _balanced(toks)
    v, binary = _evaluate_tokens(toks, True)
    if any(t[1] for t in toks):
        return [v, _evaluate_tokens(toks, False)[0]], None, binary
    return [v], None, binary


def evaluate(expr: str) -> float:
    """The value of an arithmetic expression as an answer writes it (`$1,200 x 3`, `(12/20) x 100`,
    `20%`, `2^10`), without eval. Raises DivisionByZero or Unverifiable."""
    if not expr.strip():
        raise Unverifiable("empty expression")
    return _values(expr.translate(_CLEAN), lenient=False)[0][0]


# ---------------------------------------------------------------------------------------------
# Checking equations
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Equation:
    """One equation an answer shows, and whether it holds."""

    lhs: str
    rhs: str
    holds: bool
    value: float | None  # the left side's value, when computable
    source: str  # "annotation" or "inline"
    note: str = ""

    def describe(self) -> str:
        if self.note:
            return f"{self.lhs} = {self.rhs}: {self.note}"
        shown = f"{self.value:.10g}" if self.value is not None else "?"
        return f"{self.lhs} = {self.rhs} does not hold ({self.lhs} is {shown})"


def _close(a: float, b: float, decimals: int | None, rel: float, approx: bool) -> bool:
    if a == b or abs(a - b) <= rel * max(abs(a), abs(b)):
        return True
    if decimals:
        # A result shown with d decimals may be rounded (10/3 = 3.33, 2/3 = 0.67) or truncated
        # toward zero (2/3 = 0.66), never anything else (10/3 = 3.4 is wrong).
        unit = 10.0 ** -decimals
        diff = a - b
        return abs(diff) <= 0.5 * unit + 1e-9 * unit or 0 <= (diff if a >= 0 else -diff) < unit * (1 + 1e-9)
    if approx:
        # `≈` claims closeness only: within 1%, or rounded to the shown integer.
        return abs(a - b) <= max(0.01 * abs(a), 0.5 + 1e-12)
    return False


# `7 / 1/2` means 7 / (1/2) to its writer: a tight fraction binds tighter than a spaced operator.
_TIGHT_FRACTION = re.compile(r"(?<![\d.,/])(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)(?![\d.,/])")
# A decimal with 2+ places may be a rounded fraction (0.33 for 1/3, 13.33 for 40/3, 1.67 for 5/3).
_DECIMAL = re.compile(r"(?<![\d,])(\d*)\.(\d{2,})(?!\d)")
_DENOMINATORS = (3, 6, 7, 9, 11, 12)


def _as_fraction(m: re.Match[str]) -> str:
    text = m.group(0)
    x, d = float(text), len(m.group(2))
    for q in _DENOMINATORS:
        p = round(x * q)
        # Not exact for q (0.40 is exact), but within rounding of p/q at the shown decimals.
        if abs(x * q - p) > 1e-9 and abs(x - p / q) <= 0.5 * 10.0 ** -d + 1e-12:
            return f"({p}/{q})"
    return text


def _alternative_values(expr: str) -> list[float]:
    """Values of readings a writer may have meant: tight fractions, rounded decimals as fractions."""
    forms = []
    if "/" in expr:
        f = _TIGHT_FRACTION.sub(r"(\1/\2)", expr)
        if f != expr:
            forms.append(f)
    if "." in expr:
        for base in (expr, *forms):
            f = _DECIMAL.sub(_as_fraction, base)
            if f != base:
                forms.append(f)
    out: list[float] = []
    for f in forms:
        with contextlib.suppress(Unverifiable, DivisionByZero):
            out.extend(_values(f.translate(_CLEAN))[0])
    return out


def _first_numbers(cleaned: str) -> tuple[float, ...]:
    """Readings of the number an expression starts with (`25%` is 0.25 or 25)."""
    m = _TOKEN.match(cleaned)
    if not m or not m.group(1):
        return ()
    v = float(m.group(1))
    return (v / 100.0, v) if m.group(2) else (v,)


@lru_cache(maxsize=1 << 16)
def _judge(lhs: str, rhs: str, approx: bool, rel: float, integer_rounding: bool) -> tuple[bool, float | None, str] | None:
    """(holds, left value, note) of `lhs = rhs`, or None when it cannot be read or claims nothing.

    Cached: the lab re-runs gates over the same recorded answers many times."""
    lc, rc = lhs.translate(_CLEAN), rhs.translate(_CLEAN)
    try:
        lvals, _, lops = _values(lc)
        rvals, decimals, rops = _values(rc)
    except DivisionByZero:
        return False, None, "divides by zero"
    except Unverifiable:
        return None
    if lops == 0 and rops == 0:
        return None  # `x = 5` or `0.25 = 25%`: a restatement, not arithmetic
    if any(_close(lv, rv, decimals, rel, approx) for lv in lvals for rv in rvals):
        return True, lvals[0], ""
    # Lenient readings, tried only when the plain one fails (rare, so cheap overall).
    if rops and any(_close(lv, f, None, rel, False) for lv in lvals for f in _first_numbers(rc)):
        return True, lvals[0], ""  # a running computation: `45 - 5 = 40 / 2 = 20` continues from 40
    lalts, ralts = lvals + _alternative_values(lhs), rvals + _alternative_values(rhs)
    if any(_close(lv, rv, decimals, rel, approx) for lv in lalts for rv in ralts):
        return True, lvals[0], ""
    # A quotient rounded to a whole number of things: `73 / 8 = 9 boxes`, `10 / 3 = 3 full bags`.
    if (integer_rounding and decimals == 0 and "/" in lc
            and any(math.floor(lv) <= rv <= math.ceil(lv) for lv in lvals for rv in rvals)):
        return True, lvals[0], ""
    return False, lvals[0], ""


def _normalise(text: str) -> str:
    if "\\" in text:
        text = _LATEX_FRAC.sub(r"(\1)/(\2)", text)
        for a, b in _LATEX_SUBS:
            text = text.replace(a, b)
    if "**" in text:
        text = _BOLD.sub("", text)
    if "(" in text:
        text = _LABEL.sub("", text)
    if " of " in text:
        text = _OF.sub(r"\1 × ", text)
    return text


def _truncated_before(text: str, start: int) -> bool:
    """Is the captured left side the tail of a longer expression we could not read (`2x + 3`)?"""
    if start == 0:
        return False
    c = text[start - 1]
    if c.isalnum() or c in "._":
        return True  # glued to a word or number: f(2), a2, v1.5
    j = start - 1
    while j >= 0 and text[j] in " \t":
        j -= 1
    if j < 0:
        return False
    c = text[j]
    if c in _OP_CHARS:
        # A list bullet (`- 16 - 3 = 13`, `* 2 x 3 = 6`) starts its line; an operator elsewhere means
        # the left side began before what we could read.
        k = j - 1
        while k >= 0 and text[k] in " \t":
            k -= 1
        return not (c in "-*•" and (k < 0 or text[k] == "\n"))
    if not c.isalpha():
        return False
    k = j
    while k >= 0 and text[k].isalpha():
        k -= 1
    word = text[k + 1:j + 1]
    # A lone `x` multiplies something we did not capture (`n x 3 = 12`); so do some words.
    return word in ("x", "X") or word.lower() in _CONNECTORS


def _truncated_after(text: str, end: int) -> bool:
    """Is the captured right side the head of a longer expression (`= 2x`, `= 5 * n`)?"""
    n = len(text)
    if end >= n:
        return False
    c = text[end]
    if c.isalpha() and (end + 1 >= n or not text[end + 1].isalpha()):
        return True  # `= 2x`, `= 3y`: a single glued letter is a variable
    j = end
    while j < n and text[j] in " \t":
        j += 1
    if j >= n:
        return False
    c = text[j]
    # An operator followed by something that is not a number: `= 12 * n`. A dash then a space is prose.
    if c in "+*/^×÷·":
        return True
    return c in "-−" and j + 1 < n and text[j + 1] not in " \t\n"


def _sides(text: str) -> Iterator[tuple[str, str, str]]:
    """(left side, sign, right side) of every equation written inline in (normalised) text."""
    n = len(text)
    reverse = None
    for sign in ("=", "≈"):
        p = text.find(sign)
        while p >= 0:
            if p == 0 or (p + 1 < n and text[p + 1] in "=>") or text[p - 1] in "<>!=":
                p = text.find(sign, p + 1)
                continue  # nothing before it, or `==`, `=>`, `<=`
            if reverse is None:
                reverse = text[::-1]
            run = _RUN.match(reverse, n - p)
            left = _LHS.search(text, p - (run.end() - (n - p)), p) if run else None
            right = _RHS.match(text, p + 1) if left else None
            if (right is not None and not _truncated_before(text, left.start("lhs"))  # type: ignore[union-attr]
                    and not _truncated_after(text, right.end("rhs"))):
                yield left.group("lhs"), sign, right.group("rhs")  # type: ignore[union-attr]
            p = text.find(sign, p + 1)


def find_equations(answer: str, rel_tol: float = 1e-12, integer_rounding: bool = True) -> list[Equation]:
    """Every checkable equation an answer shows, each once (an annotation and the inline text
    repeating it count as one).

    `integer_rounding` accepts a quotient shown rounded up or down to a whole number (`73 / 8 = 9`
    boxes), which GSM8K answers do on purpose."""
    if "=" not in answer and "≈" not in answer:
        return []
    out: list[Equation] = []
    seen: set[tuple[str, str]] = set()
    text = answer
    if "<<" in text:
        for m in _ANNOTATION.finditer(text):
            lhs, rhs = m.group(1).strip(), m.group(2).strip()
            seen.add((lhs.translate(_CLEAN), rhs.translate(_CLEAN)))
            r = _judge(lhs, rhs, False, rel_tol, integer_rounding)
            if r is not None:
                out.append(Equation(lhs, rhs, r[0], r[1], "annotation", r[2]))
        text = _ANNOTATION_ANY.sub("", text)
    text = _normalise(text)
    for lhs, sign, rhs in _sides(text):
        key = (lhs.translate(_CLEAN), rhs.translate(_CLEAN))
        if key in seen:
            continue
        seen.add(key)
        r = _judge(lhs, rhs, sign != "=", rel_tol, integer_rounding)
        if r is not None:
            out.append(Equation(lhs, rhs, r[0], r[1], "inline", r[2]))
    return out


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
    s = text.translate(_CLEAN).rstrip("%")
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
