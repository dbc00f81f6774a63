"""`judge`: an LLM grades the answer, on a pass/fail or a 1-10 scale.

The gate builds the judge's request and parses its judgement; the call itself goes through an
injected async callable `call(model_name, body) -> (text, trace.Call)` that the gateway's executor
supplies (retries, pricing, tracing live there), so this module does no HTTP and tests can pass a
small real function.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from gearshift.errors import ConfigError, GearshiftError
from gearshift.gates.base import Gate, GateOptions
from gearshift.request import ChatRequest, content_text
from gearshift.trace import Verdict

if TYPE_CHECKING:
    from gearshift.config import ModelConfig
    from gearshift.services import Services
    from gearshift.trace import Call

JudgeCall = Callable[[str, dict[str, Any]], Awaitable[tuple[str, "Call"]]]

DEFAULT_PROMPTS: dict[str, str] = {
    "pass_fail": (
        "You are a strict grader. Decide whether the AI assistant's answer below correctly and fully "
        "answers the user's request. Check facts, calculations and the final result; an answer that is "
        "wrong, incomplete, evasive or refuses a reasonable request fails.\n\n"
        "[Request]\n{question}\n\n[Answer]\n{answer}\n\n"
        "Explain your reasoning in at most three sentences, then end with exactly one line: "
        "`Verdict: PASS` or `Verdict: FAIL`."
    ),
    "1-10": (
        "You are a strict grader. Rate how well the AI assistant's answer below answers the user's "
        "request, from 1 (wrong, useless or a refusal) to 10 (correct, complete and helpful). Check "
        "facts, calculations and the final result; a wrong final result scores 3 or less.\n\n"
        "[Request]\n{question}\n\n[Answer]\n{answer}\n\n"
        "Explain your rating in at most three sentences, then end with exactly one line in the form "
        "`Rating: [[N]]` where N is an integer from 1 to 10."
    ),
}
DEFAULT_THRESHOLDS = {"pass_fail": 0.5, "1-10": 0.7}
# Where a recorded judgement travels in the completion-like dict the lab passes to `check`
# ({score, cost_usd, latency_ms}: an outcomes file's `<model>|judge` columns, or a trace's verdict).
RECORDED_JUDGE = "x_gearshift_judge"

# --------------------------------------------------------------------------------------------
# Parsing judgements
# --------------------------------------------------------------------------------------------

_NUM = r"(\d+(?:\.\d+)?)"
_JSON_OBJECT = re.compile(r"\{[^{}]*\}")
_PF_WORDS = {"pass": 1.0, "passed": 1.0, "passes": 1.0, "fail": 0.0, "failed": 0.0, "fails": 0.0,
             "yes": 1.0, "no": 0.0, "correct": 1.0, "incorrect": 0.0, "true": 1.0, "false": 0.0,
             "acceptable": 1.0, "unacceptable": 0.0}
_PF_LABELLED = re.compile(
    r"\b(?:verdict|judge?ment|decision|result|grade|final answer|evaluation|assessment)\b\**\s*[:=\-]\s*"
    r"[*_`\"'\[(\s]*(pass(?:ed|es)?|fail(?:ed|s)?|yes|no|correct|incorrect|acceptable|unacceptable)\b",
    re.IGNORECASE)
_PF_UPPER = re.compile(r"\b(PASS|FAIL)(?:ED|ES|S)?\b")
_JSON_KEYS_PF = ("verdict", "result", "judgement", "judgment", "decision", "pass", "passed", "grade", "correct")
_JSON_KEYS_SCORE = ("score", "rating", "grade", "overall", "overall_score", "value")
_DOUBLE_BRACKET = re.compile(rf"\[\[\s*{_NUM}\s*(?:/\s*{_NUM}\s*)?\]\]")
_LABELLED_SCORE = re.compile(
    rf"\b(?:score|rating|rate|grade|overall(?: score| rating)?)\b\**\s*(?:\([^)]*\)\s*)?(?:is|of)?\s*[:=]?\s*"
    rf"[*_`\[\s]*{_NUM}\s*\**\s*(?:/\s*{_NUM}|out of\s*{_NUM})?",
    re.IGNORECASE)
_OUT_OF = re.compile(rf"(?<![\d.]){_NUM}\s*(?:/\s*|out of\s+)(10|100|5)\b", re.IGNORECASE)
_BOLD_NUMBER = re.compile(rf"\*\*\s*{_NUM}\s*\*\*")
_STRIP = " \t\r\n*_`'\".:!()[]{}#"


def _json_value(text: str, keys: tuple[str, ...]) -> Any:
    """The first of `keys` found in a JSON object in the text (the whole text, or an embedded {...})."""
    candidates = [text.strip().removeprefix("```json").removeprefix("```").removesuffix("```")]
    candidates += _JSON_OBJECT.findall(text)
    for c in candidates:
        try:
            obj = json.loads(c)
        except ValueError:
            continue
        if isinstance(obj, dict):
            low = {str(k).lower(): v for k, v in obj.items()}
            for k in keys:
                if k in low:
                    return low[k]
    return None


def parse_pass_fail(text: str) -> float | None:
    """1.0 for a pass, 0.0 for a fail, None when the judgement cannot be read.

    Reads `PASS`, `Verdict: fail`, `**FAIL**`, `{"verdict": "pass"}`, `{"pass": true}`; when both
    words appear, a labelled verdict wins, then the last upper-case one."""
    v = _json_value(text, _JSON_KEYS_PF)
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, str) and v.strip().lower() in _PF_WORDS:
        return _PF_WORDS[v.strip().lower()]
    labelled = _PF_LABELLED.findall(text)
    if labelled:
        return _PF_WORDS[labelled[-1].lower()]
    bare = text.strip(_STRIP).lower()
    if bare in _PF_WORDS:
        return _PF_WORDS[bare]
    upper = _PF_UPPER.findall(text)
    if upper:
        return 1.0 if upper[-1] == "PASS" else 0.0
    return None


def _normalise(value: float, out_of: float | None) -> float | None:
    if out_of is not None:
        return value / out_of if out_of > 0 and 0 <= value <= out_of else None
    return value / 10.0 if 0 <= value <= 10 else None


def parse_score(text: str) -> float | None:
    """A 1-10 judgement normalised to [0, 1] (7 -> 0.7), None when it cannot be read.

    Reads `Rating: [[6]]`, `Score: 7/10`, `8 out of 10`, `**8**`, `7`, `{"score": 8}`; the last
    labelled score wins. Other denominators (`4/5`) are honoured."""
    v = _json_value(text, _JSON_KEYS_SCORE)
    if isinstance(v, int | float) and not isinstance(v, bool):
        return _normalise(float(v), None)
    if isinstance(v, str):
        try:
            return _normalise(float(v.strip()), None)
        except ValueError:
            pass
    for pattern in (_DOUBLE_BRACKET, _LABELLED_SCORE):
        found = pattern.findall(text)
        if found:
            groups = [g for g in found[-1] if g]
            return _normalise(float(groups[0]), float(groups[1]) if len(groups) > 1 else None)
    found = _OUT_OF.findall(text)
    if found:
        return _normalise(float(found[-1][0]), float(found[-1][1]))
    found = _BOLD_NUMBER.findall(text)
    if found:
        return _normalise(float(found[-1]), None)
    bare = text.strip(_STRIP)
    if re.fullmatch(_NUM, bare):
        return _normalise(float(bare), None)
    return None


# --------------------------------------------------------------------------------------------
# The capability rule
# --------------------------------------------------------------------------------------------


def check_judge_capability(judge_model: ModelConfig, escalation_model: ModelConfig,
                           allow_weak_judge: bool = False, where: str = "judge") -> str | None:
    """DESIGN.md: a judge whose model ranks below the model its gate escalates to is refused.

    Returns None when the judge is capable enough; raises ConfigError when it is not; with
    `allow_weak_judge` returns the warning the gateway logs at every start instead."""
    if judge_model.rank >= escalation_model.rank:
        return None
    why = (f"judge model {judge_model.name!r} (rank {judge_model.rank}) ranks below "
           f"{escalation_model.name!r} (rank {escalation_model.rank}), the model this gate escalates to. "
           f"A judge no better than the cheap model rarely catches its errors: it accepts the wrong answers "
           f"it would have made itself, so quality drops while the config looks safe.")
    if not allow_weak_judge:
        raise ConfigError(f"{where}.model: {why} Use a judge ranked {escalation_model.rank} or higher, "
                          f"or set `allow_weak_judge: true` on this gate to accept the risk.")
    return f"{where}: weak judge allowed by `allow_weak_judge: true`: {why}"


# --------------------------------------------------------------------------------------------
# The gate
# --------------------------------------------------------------------------------------------


class JudgeOptions(GateOptions):
    model: str = Field(description="the judge model (a name under `models:`)")
    scale: Literal["pass_fail", "1-10"] = "pass_fail"
    prompt: str | None = Field(default=None, description="template with {question} and {answer}")
    allow_weak_judge: bool = Field(default=False, description="accept a judge ranked below the escalation model")
    max_tokens: int = Field(default=400, gt=0, le=32_000, description="the judge's answer budget")
    temperature: float = Field(default=0.0, ge=0, le=2)

    @field_validator("prompt")
    @classmethod
    def _placeholders(cls, v: str | None) -> str | None:
        if v is not None and "{answer}" not in v:
            raise ValueError("prompt must contain {answer} (and usually {question}) where the texts go")
        return v


def question_text(request: ChatRequest) -> str:
    """What the judge is shown as the request: the user's text, or the whole conversation by role."""
    msgs = [m for m in request.messages if isinstance(m, dict)]
    if len(msgs) == 1:
        return content_text(msgs[0].get("content"))
    return "\n\n".join(f"{m.get('role', 'user')}: {content_text(m.get('content'))}" for m in msgs)


class JudgeGate(Gate[JudgeOptions]):
    """An LLM grades the answer. Pass/fail scores 1 or 0 (threshold 0.5); 1-10 scores N/10 (threshold
    0.7). An unparseable judgement fails the gate with error="unparseable" and is counted."""

    kind = "judge"
    Options = JudgeOptions
    offline = False
    replays_recorded = True  # the lab replays its recorded verdicts (`check` on a recorded completion)

    def __init__(self, options: JudgeOptions, model: ModelConfig | None = None, call: JudgeCall | None = None) -> None:
        super().__init__(options)
        if options.threshold is None:
            self.threshold = DEFAULT_THRESHOLDS[options.scale]
        self.model_config = model
        self.call = call
        self.template = options.prompt or DEFAULT_PROMPTS[options.scale]
        self.counts: Counter[str] = Counter()  # judged, unparseable, call_failed: for the watch

    @classmethod
    def from_options(cls, options: Any, models: dict[str, ModelConfig], where: str) -> JudgeGate:
        if options.model not in models:
            raise ConfigError(f"{where}.model: bad value {options.model!r}; allowed: one of the models "
                              f"{sorted(models)}")
        return cls(options, models[options.model])

    def bind(self, call: JudgeCall) -> JudgeGate:
        """Give the gate the executor's model caller; returns the gate."""
        self.call = call
        return self

    def attach(self, services: Services) -> None:
        """The gateway's executor calls the judge model (retries, pricing, tracing)."""
        self.call = services.call_model

    def check_capability(self, escalation_model: ModelConfig, where: str = "judge") -> str | None:
        """The capability rule against the model this gate escalates to (see check_judge_capability)."""
        if self.model_config is None:
            raise ValueError("judge gate built without its model config; use build_gate(spec, models)")
        return check_judge_capability(self.model_config, escalation_model,
                                      self.options.allow_weak_judge, where)

    def render(self, request: ChatRequest, answer: str) -> str:
        # str.replace, not str.format: prompts and answers may contain braces (JSON, code).
        return self.template.replace("{question}", question_text(request)).replace("{answer}", answer)

    def body(self, request: ChatRequest, answer: str) -> dict[str, Any]:
        """The chat-completions body sent to the judge model."""
        o = self.options
        return {"model": o.model, "messages": [{"role": "user", "content": self.render(request, answer)}],
                "temperature": o.temperature, "max_tokens": o.max_tokens}

    def parse(self, judgement: str) -> float | None:
        scale = self.options.scale
        return parse_pass_fail(judgement) if scale == "pass_fail" else parse_score(judgement)

    def check(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        """The lab's replay: the judge's recorded verdict on this answer (RECORDED_JUDGE), at this gate's
        threshold; its cost, when not recorded, estimated from the judge model's price."""
        rec = (completion or {}).get(RECORDED_JUDGE)
        if not isinstance(rec, dict) or not isinstance(rec.get("score"), int | float):
            raise ValueError(f"judge gate {self.name!r}: no recorded judgement for this answer; offline, a judge "
                             "replays its recorded verdicts only (outcomes `<model>|judge`)")
        cost = rec.get("cost_usd")
        if cost is None:
            cost = self.estimated_cost(request, answer)
        return self.verdict(float(rec["score"]), [f"recorded judgement {float(rec['score']):.2f} (threshold "
                                                  f"{self.threshold:.2f})"],
                            cost_usd=float(cost), latency_ms=float(rec.get("latency_ms") or 0.0))

    def estimated_cost(self, request: ChatRequest, answer: str) -> float:
        """USD one judgement costs at the judge model's price: the rendered prompt at ~4 characters a
        token, and a reasoned verdict of ~100 tokens (an estimate)."""
        if self.model_config is None:
            return 0.0
        return self.model_config.price.cost(len(self.render(request, answer)) // 4 + 4, 100)

    async def acheck(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        if self.call is None:
            raise RuntimeError(f"judge gate {self.name!r} has no model caller; the executor must bind() one")
        model = self.options.model
        t0 = time.perf_counter()
        try:
            text, call = await self.call(model, self.body(request, answer))
        except (GearshiftError, TimeoutError) as e:
            self.counts["call_failed"] += 1
            msg = getattr(e, "message", None) or type(e).__name__
            return Verdict(gate=self.name, passed=False, score=0.0, reasons=[f"judge call failed: {msg}"],
                           latency_ms=(time.perf_counter() - t0) * 1000, error="judge_failed")
        call.role = "judge"
        latency = call.latency_ms or (time.perf_counter() - t0) * 1000
        score = self.parse(text or "")
        if score is None:
            self.counts["unparseable"] += 1
            excerpt = (text or "").strip().replace("\n", " ")[:120]
            return Verdict(gate=self.name, passed=False, score=0.0,
                           reasons=["unparseable judgement", f"judge said: {excerpt!r}"], error="unparseable",
                           cost_usd=call.cost_usd, latency_ms=latency, calls=[call])
        self.counts["judged"] += 1
        return self.verdict(score, [f"{model} judged {score:.2f} (threshold {self.threshold:.2f})"],
                            cost_usd=call.cost_usd, latency_ms=latency, calls=[call])
