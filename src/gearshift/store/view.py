"""One reading of a stored trace: which calls served the client and which were shadow work, whether a
gate judged it or it escalated, what it cost, and its shadow pair. Every reader of traces (the
`gearshift traces` summary, the watch, the lab's report and check, outcomes from traces) asks here.

Shadow work is appended to a trace after the client's answer (gateway/shadow.py): the first call with
a shadow role and every call after it (its judge) are shadow calls, and verdicts whose gate starts
with `shadow_` are shadow verdicts. Neither counts as gating, escalation or serving spend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gearshift.trace import SHADOW_ROLES, Call, Trace

# Calls whose answer could go to the client.
ANSWER_ROLES = ("primary", "escalation", "fallback")
# Calls that judged a serving answer (a gate without calls of its own is recorded as role `gate`).
GATE_ROLES = ("gate", "judge")
# Verdicts the shadow code records: on the judged answer, and on the reference (right by definition).
SHADOW_GATE = "shadow_agreement"
SHADOW_REFERENCE = "shadow_reference"


class Price(Protocol):
    """A model's price (config.Price): USD for a number of input and output tokens."""

    def cost(self, input_tokens: int, output_tokens: int) -> float: ...


def _number(v: Any) -> float | None:
    """A numeric field as float (booleans count as 0/1), else None."""
    return float(v) if isinstance(v, int | float) else None


def _grade(d: Mapping[str, Any]) -> float | None:
    """A hand-written call's own quality (trace files for the lab): `quality`, `score` or `verdict.score`."""
    for key in ("quality", "score"):
        v = d.get(key)
        if isinstance(v, bool):
            return 1.0 if v else 0.0
        if isinstance(v, int | float):
            return float(v)
    verdict = d.get("verdict")
    return _number(verdict.get("score")) if isinstance(verdict, Mapping) else None


@dataclass(frozen=True, slots=True)
class CallView:
    """One call of a stored trace."""

    model: str
    role: str
    input_tokens: int = 0
    output_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    status: int = 200
    error: str | None = None
    attempt: int = 1
    response: str | None = None
    grade: float | None = None  # a quality the row itself carries (never set by the gateway)

    @classmethod
    def of(cls, c: Mapping[str, Any] | Call) -> CallView:
        """The view of a stored call dict (missing fields take their defaults) or a Call."""
        if isinstance(c, Call):
            return cls(c.model, c.role, c.input_tokens, c.output_tokens, c.usage_estimated, c.cost_usd,
                       c.latency_ms, c.status, c.error, c.attempt, c.response)
        status = c.get("status")
        return cls(str(c.get("model")), str(c.get("role")), int(c.get("input_tokens") or 0),
                   int(c.get("output_tokens") or 0), bool(c.get("usage_estimated")), float(c.get("cost_usd") or 0.0),
                   float(c.get("latency_ms") or 0.0), 200 if status is None else int(status), c.get("error"),
                   int(c.get("attempt") or 1), c.get("response"), _grade(c))

    @property
    def ok(self) -> bool:
        """The call returned an answer: no error, status 200."""
        return not self.error and self.status == 200

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class VerdictView:
    """One verdict of a stored trace: a gate's on a serving answer, or a shadow comparison's."""

    gate: str
    model: str | None
    passed: bool | None
    score: float | None  # the numeric score, when recorded

    @classmethod
    def of(cls, v: Mapping[str, Any]) -> VerdictView:
        passed = v.get("passed")
        model = v.get("model")
        return cls(str(v.get("gate") or ""), None if model is None else str(model),
                   passed if isinstance(passed, bool) else None, _number(v.get("score")))

    @property
    def shadow(self) -> bool:
        return self.gate.startswith("shadow_")

    @property
    def grade(self) -> float | None:
        """The verdict as a quality in [0, 1]: its score, else pass/fail as 1/0, else None."""
        if self.score is not None:
            return self.score
        return None if self.passed is None else float(self.passed)


@dataclass(frozen=True, slots=True)
class ShadowPair:
    """A shadow comparison: `model`'s answer judged against `reference`'s (None when not recorded)."""

    model: str | None
    reference: str | None
    passed: bool
    score: float | None


@dataclass(frozen=True, slots=True)
class TraceView:
    """A stored trace (a row of TraceStore.traces(), a Trace, or a hand-written dict) and what it means."""

    id: str | None
    created: float | None
    router: str | None
    arm: str | None
    final_model: str | None
    status: int
    streamed: bool
    shadowed: bool
    latency_ms: float
    estimated_tokens: int
    score: float | None
    error: str | None
    prompt: str | None
    metadata: Mapping[str, Any]
    calls: tuple[CallView, ...]
    verdicts: tuple[VerdictView, ...]
    endpoint: str = "chat"
    shadow_start: int = field(init=False, repr=False, compare=False)  # index of the first shadow call

    def __post_init__(self) -> None:
        start = next((i for i, c in enumerate(self.calls) if c.role in SHADOW_ROLES), len(self.calls))
        object.__setattr__(self, "shadow_start", start)

    @classmethod
    def of(cls, t: Mapping[str, Any] | Trace | TraceView) -> TraceView:
        """The view of a stored trace dict (missing fields take their defaults), a Trace, or itself."""
        if isinstance(t, TraceView):
            return t
        if isinstance(t, Trace):
            return cls(t.id, t.created, t.router, t.arm, t.final_model, t.status, t.streamed, t.shadowed,
                       t.latency_ms, t.estimated_tokens, t.score, t.error, t.prompt, t.metadata,
                       tuple(CallView.of(c) for c in t.calls), tuple(VerdictView.of(v) for v in t.verdicts),
                       t.endpoint)
        score = t.get("score")
        return cls(t.get("id"), t.get("created"), t.get("router"), t.get("arm"), t.get("final_model"),
                   int(t.get("status", 200) or 0), bool(t.get("streamed")),
                   bool(t.get("shadowed")), float(t.get("latency_ms") or 0.0), int(t.get("estimated_tokens") or 0),
                   None if score is None else float(score), t.get("error"), t.get("prompt"), t.get("metadata") or {},
                   tuple(CallView.of(c) for c in t.get("calls") or ()),
                   tuple(VerdictView.of(v) for v in t.get("verdicts") or () if isinstance(v, Mapping)),
                   t.get("endpoint") or "chat")

    # --- what happened -----------------------------------------------------------------------------

    @property
    def routed(self) -> bool:
        """A router handled it (False when it was rejected first: auth, a bad body)."""
        return bool(self.router)

    @property
    def answered(self) -> bool:
        """The client got an answer: status 200 and a final model."""
        return self.status == 200 and bool(self.final_model)

    @property
    def failed(self) -> bool:
        """It ended in a server-side (5xx) error."""
        return self.status >= 500

    def of_router(self, router: str) -> bool:
        """It ran under `router`, directly or as an A/B arm."""
        return router in (self.router, self.arm)

    @property
    def serving_calls(self) -> tuple[CallView, ...]:
        """The calls made for the client: answers, retries, fallbacks, gates and judges."""
        return self.calls[:self.shadow_start]

    @property
    def shadow_calls(self) -> tuple[CallView, ...]:
        """The shadow call and every call after it (its judge)."""
        return self.calls[self.shadow_start:]

    @property
    def answer_calls(self) -> tuple[CallView, ...]:
        """Serving calls that answered (or tried to): primary, escalation, fallback."""
        return tuple(c for c in self.calls if c.role in ANSWER_ROLES)

    @property
    def gate_calls(self) -> tuple[CallView, ...]:
        """Serving calls that judged an answer."""
        return tuple(c for c in self.serving_calls if c.role in GATE_ROLES)

    @property
    def gate_verdicts(self) -> tuple[VerdictView, ...]:
        """Verdicts of the gates on serving answers (shadow verdicts left out)."""
        return tuple(v for v in self.verdicts if not v.shadow)

    @property
    def gated(self) -> bool:
        """A gate judged a serving answer (a gate or judge call, or a gate verdict)."""
        return bool(self.gate_verdicts) or any(c.role in GATE_ROLES for c in self.serving_calls)

    @property
    def escalated(self) -> bool:
        """A later step (role `escalation`) answered after the first failed its gates."""
        return any(c.role == "escalation" for c in self.serving_calls)

    @property
    def fell_back(self) -> bool:
        """A fallback model answered after the step's model failed upstream."""
        return any(c.role == "fallback" for c in self.serving_calls)

    @property
    def gates_passed(self) -> int:
        """How many gate verdicts passed."""
        return sum(1 for v in self.gate_verdicts if v.passed)

    @property
    def primary_model(self) -> str | None:
        """The model the route tried first."""
        return next((c.model for c in self.calls if c.role == "primary"), None)

    # --- money and tokens ------------------------------------------------------------------------

    @property
    def cost_usd(self) -> float:
        """What serving the request cost: answers, retries, fallbacks, gates and judges; not shadow work."""
        return sum(c.cost_usd for c in self.serving_calls)

    @property
    def gate_cost_usd(self) -> float:
        """The part of cost_usd spent on gates and judges."""
        return sum(c.cost_usd for c in self.gate_calls)

    @property
    def shadow_cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.shadow_calls)

    @property
    def answer_tokens(self) -> int:
        """Input and output tokens of the calls that answered the client (not gates, not shadows)."""
        return sum(c.tokens for c in self.answer_calls)

    def counterfactual_cost(self, price: Price) -> float:
        """What the request would have cost on a reference model at `price`: its prompt tokens and the
        final answer's output tokens. An estimate: another model answers at another length."""
        answered = [c for c in self.answer_calls if c.status == 200]
        if not answered:
            return 0.0
        input_tokens = max(c.input_tokens for c in answered)
        final = next((c for c in reversed(answered) if c.model == self.final_model), answered[-1])
        return price.cost(input_tokens, final.output_tokens)

    # --- shadow pairs and outcomes ------------------------------------------------------------------

    @property
    def shadow_answered(self) -> bool:
        """A shadow call returned an answer."""
        return any(c.role == "shadow" and c.ok for c in self.calls)

    @property
    def pair_reference(self) -> str | None:
        """The reference model of the shadow pair, when the trace recorded it."""
        return next((v.model for v in self.verdicts if v.gate == SHADOW_REFERENCE), None)

    @property
    def pairs(self) -> tuple[ShadowPair, ...]:
        """The shadow comparisons: each judged answer with the pair's reference."""
        ref = self.pair_reference
        return tuple(ShadowPair(v.model, ref, bool(v.passed), v.score) for v in self.verdicts if v.gate == SHADOW_GATE)

    def served_pairs(self, reference: str | None = None) -> tuple[ShadowPair, ...]:
        """Pairs that judged the answer the client got, against a model other than the one that gave
        it (`reference` when the trace did not record its own). Exploration pairs are left out: the
        client got the reference's answer, so they say nothing about served quality."""
        ref = self.pair_reference or reference
        final = self.final_model
        return tuple(p for p in self.pairs if p.model == final and final != ref)

    @property
    def answers(self) -> tuple[CallView, ...]:
        """Every answer the prompt got, served or shadow (successful primary, escalation, fallback and
        shadow calls): the rows of outcomes from traces."""
        return tuple(c for c in self.calls if (c.role in ANSWER_ROLES or c.role == "shadow") and c.ok)

    @property
    def grades(self) -> dict[str, float]:
        """Each model's latest verdict score in this trace (gates and shadow comparisons alike)."""
        return {v.model: v.score for v in self.verdicts if v.model and v.score is not None}

    def quality(self, call: CallView) -> float:
        """An answer's quality: the call's own grade, else its model's verdict score, else NaN."""
        if call.grade is not None:
            return call.grade
        return self.grades.get(call.model, float("nan"))


__all__ = ["ANSWER_ROLES", "GATE_ROLES", "SHADOW_GATE", "SHADOW_REFERENCE", "CallView", "Price", "ShadowPair",
           "TraceView", "VerdictView"]
