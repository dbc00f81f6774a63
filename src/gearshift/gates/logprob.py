"""`logprob`: the cheap model's own confidence, from the token logprobs of its answer.

The score is exp(mean token logprob) (the geometric mean token probability), or exp(min) with
`measure: min`; `span: final_answer` reads only the tokens of the final number the answer states
(gates.arithmetic.final_number). The gateway asks the upstream for logprobs on a step that has
this gate and removes them from the answer when the client did not ask for them.

Offline, an outcomes file's `<model>|logprob` column (the mean token logprob of the answer) reaches
`check` as a completion-like dict (`recorded_completion`), so the lab sweeps this gate's threshold.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from gearshift.gates.arithmetic import final_number
from gearshift.gates.base import Gate, GateOptions
from gearshift.request import ChatRequest
from gearshift.trace import Verdict

# Where a recorded mean logprob travels in the completion-like dict the lab passes to `check`.
RECORDED = "x_gearshift_logprob"


def recorded_completion(text: str, logprob: float) -> dict[str, Any]:
    """A completion-like dict carrying a recorded mean token logprob (the outcomes column)."""
    return {"choices": [{"message": {"role": "assistant", "content": text}}], RECORDED: float(logprob)}


def token_logprobs(completion: dict[str, Any] | None) -> list[tuple[str, float]] | None:
    """(token, logprob) of the first choice's content, as OpenAI returns for `logprobs: true`; None when
    the completion carries none."""
    try:
        content = completion["choices"][0]["logprobs"]["content"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(content, list):
        return None
    out = []
    for t in content:
        if isinstance(t, dict) and isinstance(t.get("logprob"), int | float) and not isinstance(t["logprob"], bool):
            out.append((str(t.get("token", "")), float(t["logprob"])))
    return out


def answer_span(tokens: list[tuple[str, float]], answer: str) -> list[tuple[str, float]] | None:
    """The tokens that overlap the final number the answer states, None when it states none."""
    number = final_number(answer)
    if number is None:
        return None
    start = answer.rfind(number)
    end = start + len(number)
    span, at = [], 0
    for token, lp in tokens:
        if at < end and at + len(token) > start:
            span.append((token, lp))
        at += len(token)
    return span or None


class LogprobOptions(GateOptions):
    measure: Literal["mean", "min"] = Field(default="mean", description="mean or least token logprob")
    span: Literal["answer", "final_answer"] = Field(
        default="answer", description="the whole answer, or the tokens of its final number only")


class LogprobGate(Gate[LogprobOptions]):
    """Score = exp(mean, or min, token logprob) over the answer or its final number; no logprobs fails
    (error="no_logprobs"), so an upstream that cannot give them escalates instead of passing blind."""

    kind = "logprob"
    Options = LogprobOptions
    default_threshold = 0.8
    needs_logprobs = True

    def check(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        o = self.options
        tokens = token_logprobs(completion)
        if tokens is None:
            recorded = completion.get(RECORDED) if isinstance(completion, dict) else None
            if isinstance(recorded, int | float):
                return self._recorded(float(recorded))
            return self.verdict(0.0, ["the upstream returned no logprobs"], error="no_logprobs")
        where = "answer"
        if o.span == "final_answer":
            span = answer_span(tokens, answer)
            if span is None:
                where = "answer (no final number stated)"
            else:
                tokens, where = span, "final number"
        if not tokens:
            return self.verdict(0.0, ["no answer tokens"])
        values = [lp for _, lp in tokens]
        lp = min(values) if o.measure == "min" else sum(values) / len(values)
        score = math.exp(min(0.0, lp))
        return self.verdict(score, [f"{o.measure} logprob {lp:.3f} over {len(values)} token(s) of the {where}: "
                                    f"confidence {score:.3f} (threshold {self.threshold:.3f})"])

    def _recorded(self, lp: float) -> Verdict:
        o = self.options
        if o.measure != "mean" or o.span != "answer":
            # The column holds the whole answer's mean; calibrating another measure on it would mislead.
            raise ValueError(f"gate {self.name!r}: recorded outcomes carry the mean logprob of the whole answer; "
                             f"measure={o.measure}, span={o.span} needs token logprobs (record them in traces)")
        score = math.exp(min(0.0, lp))
        return self.verdict(score, [f"recorded mean logprob {lp:.3f}: confidence {score:.3f}"])
