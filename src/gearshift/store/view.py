"""One reading of a stored trace: which calls served the client and which were shadow work, whether a
gate judged it or it escalated, what it cost, and its shadow pair. Every reader of traces (the
`gearshift traces` summary, the watch, the lab's report and check, outcomes from traces) asks here.

Shadow work is appended to a trace after the client's answer (gateway/shadow.py): the first call with
a shadow role and every call after it (its judge) are shadow calls, and verdicts whose gate starts
with `shadow_` are shadow verdicts. Neither counts as gating, escalation or serving spend.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Protocol

from gearshift.trace import SHADOW_ROLES, Call, Trace

# Calls whose answer could go to the client.
ANSWER_ROLES = ("primary", "escalation", "fallback")
# Calls that judged a serving answer (a gate without calls of its own is recorded as role `gate`).
GATE_ROLES = ("gate", "judge")
# Verdicts the shadow code records: on the judged answer, and on the reference (right by definition).
SHADOW_GATE = "shadow_agreement"
SHADOW_REFERENCE = "shadow_reference"
# Verdicts of a capable judge on a sampled disagreement: each answer's own grade (gateway/shadow.py).
SHADOW_RESOLUTION = "shadow_resolution"
# Each answer's own grade where the pair's scorer knows it (compare: recorded, the qualities replay models report).
SHADOW_GRADE = "shadow_grade"
# Pair methods that score agreement with the reference, not quality: a disagreement is not a loss.
AGREEMENT_METHODS = ("final_answer", "json", "tool_call")


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


# Views are not frozen: a frozen dataclass init costs 5x, and one is made per trace read or written.
@dataclass(slots=True, unsafe_hash=True)
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


@dataclass(slots=True, unsafe_hash=True)
class VerdictView:
    """One verdict of a stored trace: a gate's on a serving answer, or a shadow comparison's."""

    gate: str
    model: str | None
    passed: bool | None
    score: float | None  # the numeric score, when recorded
    method: str | None = None  # how a shadow pair was scored (final_answer, json, tool_call, judge)

    @classmethod
    def of(cls, v: Mapping[str, Any]) -> VerdictView:
        passed = v.get("passed")
        model = v.get("model")
        method = v.get("method")
        return cls(str(v.get("gate") or ""), None if model is None else str(model),
                   passed if isinstance(passed, bool) else None, _number(v.get("score")),
                   None if method is None else str(method))

    @property
    def shadow(self) -> bool:
        return self.gate.startswith("shadow_")

    @property
    def grade(self) -> float | None:
        """The verdict as a quality in [0, 1]: its score, else pass/fail as 1/0, else None."""
        if self.score is not None:
            return self.score
        return None if self.passed is None else float(self.passed)


@dataclass(slots=True, unsafe_hash=True)
class ShadowPair:
    """A shadow comparison: `model`'s answer judged against `reference`'s (None when not recorded).

    resolved: for a disagreement a capable judge resolved, (the answer's grade, the reference's grade)."""

    model: str | None
    reference: str | None
    passed: bool
    score: float | None
    method: str | None = None
    resolved: tuple[float, float] | None = None

    @property
    def disagreement(self) -> bool:
        """Scored by agreement and the answers differ: a loss only if the reference was right."""
        return not self.passed and self.method in AGREEMENT_METHODS


@dataclass(slots=True, unsafe_hash=True)
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
    client: str | None = None  # the client key's name
    team: str | None = None
    cache: str | None = None  # what the response cache did (trace.CACHE_RESULTS); None: the router has none
    cache_saved_usd: float = 0.0  # a hit's saving: the route's first model's price for the cached usage
    shadow_start: int = field(init=False, repr=False, compare=False)  # index of the first shadow call
    _gates: tuple[VerdictView, ...] = field(init=False, repr=False, compare=False)  # gate_verdicts, read often
    # The serving calls' roles: what gated, escalated and fell_back ask, found in the one pass over the calls
    # that finds shadow_start (the trace writer reads these of every trace it writes).
    _serving_roles: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        roles = [c.role for c in self.calls]
        start = next((i for i, r in enumerate(roles) if r in SHADOW_ROLES), len(roles))
        object.__setattr__(self, "shadow_start", start)
        object.__setattr__(self, "_serving_roles", frozenset(roles[:start]))
        object.__setattr__(self, "_gates", tuple(v for v in self.verdicts if not v.shadow) if self.verdicts else ())

    @classmethod
    def of(cls, t: Mapping[str, Any] | Trace | TraceView) -> TraceView:
        """The view of a stored trace dict (missing fields take their defaults), a Trace, or itself."""
        if isinstance(t, TraceView):
            return t
        if isinstance(t, Trace):
            return cls(t.id, t.created, t.router, t.arm, t.final_model, t.status, t.streamed, t.shadowed,
                       t.latency_ms, t.estimated_tokens, t.score, t.error, t.prompt, t.metadata,
                       tuple(CallView.of(c) for c in t.calls), tuple(VerdictView.of(v) for v in t.verdicts),
                       t.endpoint, t.client, t.team, t.cache, t.cache_saved_usd)
        score = t.get("score")
        return cls(t.get("id"), t.get("created"), t.get("router"), t.get("arm"), t.get("final_model"),
                   int(t.get("status", 200) or 0), bool(t.get("streamed")),
                   bool(t.get("shadowed")), float(t.get("latency_ms") or 0.0), int(t.get("estimated_tokens") or 0),
                   None if score is None else float(score), t.get("error"), t.get("prompt"), t.get("metadata") or {},
                   tuple(CallView.of(c) for c in t.get("calls") or ()),
                   tuple(VerdictView.of(v) for v in t.get("verdicts") or () if isinstance(v, Mapping)),
                   t.get("endpoint") or "chat", t.get("client"), t.get("team"), t.get("cache"),
                   float(t.get("cache_saved_usd") or 0.0))

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
        return self._gates

    @property
    def gated(self) -> bool:
        """A gate judged a serving answer (a gate or judge call, or a gate verdict)."""
        return bool(self._gates) or not self._serving_roles.isdisjoint(GATE_ROLES)

    @property
    def escalated(self) -> bool:
        """A later step (role `escalation`) answered after the first failed its gates."""
        return "escalation" in self._serving_roles

    @property
    def fell_back(self) -> bool:
        """A fallback model answered after the step's model failed upstream."""
        return "fallback" in self._serving_roles

    @property
    def gates_passed(self) -> int:
        """How many gate verdicts passed."""
        return sum(1 for v in self.gate_verdicts if v.passed)

    @property
    def gate_verdict(self) -> str:
        """The gates' verdict on the served answer: pass (all passed), fail (one failed) or none."""
        verdicts = self.gate_verdicts
        if not verdicts:
            return "none"
        return "pass" if all(v.passed for v in verdicts) else "fail"

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
    def cache_hit(self) -> bool:
        """The response cache answered it: no upstream call was made."""
        return self.cache == "hit"

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
        return price.cost(*self.counterfactual_tokens)

    @property
    def counterfactual_tokens(self) -> tuple[int, int]:
        """(input, output) tokens of the counterfactual: the largest prompt of the answered calls and the
        final answer's output; (0, 0) without an answered call."""
        answered = [c for c in self.calls if c.role in ANSWER_ROLES and c.status == 200]
        if len(answered) < 2:  # most traces: one answer, both figures its own
            return (answered[0].input_tokens, answered[0].output_tokens) if answered else (0, 0)
        final = next((c for c in reversed(answered) if c.model == self.final_model), answered[-1])
        return max(c.input_tokens for c in answered), final.output_tokens

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
        res = {v.model: v.grade for v in self.verdicts if v.gate == SHADOW_RESOLUTION}
        return tuple(ShadowPair(v.model, ref, bool(v.passed), v.score, v.method, _resolution(res, v.model, ref))
                     for v in self.verdicts if v.gate == SHADOW_GATE)

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

    @property
    def facts(self) -> Facts:
        """What the dashboard's sums need of this trace, computed once when it is written (store/rows.py)."""
        final = self.final_model
        # Pairs on the final model's answer: served unless the reference is that model (served_pairs).
        # Most traces have no shadow verdict: no pairs to read then.
        shadowed = len(self._gates) < len(self.verdicts)
        pair = PairEstimate.of(p for p in self.pairs if final is not None and p.model == final) if shadowed \
            else PairEstimate()
        return Facts(self.answered, self.gated, self.escalated, self.gate_verdict, len(self._gates),
                     self.gates_passed, *self.counterfactual_tokens, sum(c.usage_estimated for c in self.calls),
                     self.pair_reference if shadowed else None, pair)


def cache_figures(traces: Iterable[Mapping[str, Any] | Trace | TraceView]) -> dict[str, Any]:
    """The response cache over some traces: requests by result (hit, miss, bypass, skip), the hit rate
    among those it could answer (hits and misses), and the USD its hits saved."""
    return Totals.of(traces, None).cache_figures()


def cache_line(figures: Mapping[str, Any]) -> str:
    """One line for the CLI and reports: what the response cache did (`cache_figures`)."""
    by = figures["by_result"]
    rate = figures["hit_rate"]
    return (f"response cache: {by.get('hit', 0)} hits, {by.get('miss', 0)} misses, {by.get('bypass', 0)} bypassed, "
            f"{by.get('skip', 0)} not cacheable" + (f" (hit rate {rate:.1%})" if rate is not None else "")
            + f"; hits saved ${figures['saved_usd']:.6f} at the prices of the routes that would have served them")


def _resolution(grades: Mapping[str | None, float | None], model: str | None,
                reference: str | None) -> tuple[float, float] | None:
    a, r = grades.get(model), grades.get(reference)
    return None if a is None or r is None else (a, r)


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (two-sided, at `confidence`)."""
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(slots=True, unsafe_hash=True)
class PairEstimate:
    """The cheaper model's quality relative to the reference, from shadow pairs: the one estimator the
    watch, recalibration, proofs and `lab check` read.

    Agreement is not quality: where a pair scored by agreement (final_answer, json, tool_call) differs,
    the reference may be the one that is wrong. A sampled share of those disagreements is resolved by a
    capable judge grading each answer (`shadow.resolve`). With resolution sampled at random among the
    disagreements, the resolved ones stand for all of them: each unresolved disagreement counts as the
    resolved ones' mean grades (`weak_mean` for the answer, `reference_mean` for the reference), which
    is unbiased for each mean, and `retained` = mean answer grade / mean reference grade is the ratio
    of the two (consistent). Without any resolution every disagreement counts as a loss (answer 0,
    reference 1): then `retained` is the agreement rate, a lower bound (`lower_bound`).
    """

    pairs: int = 0  # scored pairs
    passed: int = 0  # agreed (or a judge passed them): answer and reference both count 1
    judged: int = 0  # failed by a pairwise judge: answer 0, reference 1 (the judge already compared)
    disagreed: int = 0  # failed by agreement: resolved or not
    resolved: int = 0  # disagreements a judge resolved
    resolved_weak: float = 0.0  # sum of the answers' grades on the resolved disagreements
    resolved_reference: float = 0.0  # sum of the references' grades on them

    @classmethod
    def of(cls, pairs: Iterable[ShadowPair]) -> PairEstimate:
        """The estimate of some pairs (e.g. `TraceView.served_pairs` of a window's traces)."""
        n = passed = judged = disagreed = resolved = 0
        sw = sr = 0.0
        for p in pairs:
            n += 1
            if p.passed:
                passed += 1
            elif not p.disagreement:
                judged += 1
            else:
                disagreed += 1
                if p.resolved is not None:
                    resolved += 1
                    sw += p.resolved[0]
                    sr += p.resolved[1]
        return cls(n, passed, judged, disagreed, resolved, sw, sr)

    @classmethod
    def of_traces(cls, traces: Iterable[Mapping[str, Any] | TraceView]) -> PairEstimate:
        """The estimate of every shadow pair of some traces (served and exploration pairs alike)."""
        return cls.of(p for t in map(TraceView.of, traces) for p in t.pairs)

    def __add__(self, other: PairEstimate) -> PairEstimate:
        """The estimate of both sets of pairs (every field is a sum)."""
        return PairEstimate(self.pairs + other.pairs, self.passed + other.passed, self.judged + other.judged,
                            self.disagreed + other.disagreed, self.resolved + other.resolved,
                            self.resolved_weak + other.resolved_weak, self.resolved_reference + other.resolved_reference)

    @property
    def lower_bound(self) -> bool:
        """Disagreements were counted as losses with none resolved: the estimate is a lower bound."""
        return self.disagreed > 0 and self.resolved == 0

    @property
    def agreement(self) -> float | None:
        """The share of pairs that passed (agreement alone)."""
        return self.passed / self.pairs if self.pairs else None

    @property
    def weak_mean(self) -> float:
        """Mean grade of the answer on a disagreement (0 without resolutions: every one a loss)."""
        return self.resolved_weak / self.resolved if self.resolved else 0.0

    @property
    def reference_mean(self) -> float:
        """Mean grade of the reference on a disagreement (1 without resolutions)."""
        return self.resolved_reference / self.resolved if self.resolved else 1.0

    @property
    def retained(self) -> float | None:
        """Answer quality over reference quality on these pairs; None without pairs."""
        return self._ratio(self.passed / self.pairs, self.weak_mean, self.reference_mean) if self.pairs else None

    def _ratio(self, passed: float, weak: float, reference: float) -> float:
        fail = 1.0 - passed
        failed = self.judged + self.disagreed
        d = fail * (self.disagreed / failed) if failed else 0.0
        den = passed + (fail - d) + d * reference
        return (passed + d * weak) / den if den > 0 else 1.0

    def interval(self, confidence: float = 0.95) -> tuple[float, float] | None:
        """A conservative interval of `retained`: Wilson intervals of the pass share and of the resolved
        means, combined at their worst corners. Without resolutions, Wilson's on the agreement."""
        if not self.pairs:
            return None
        ps = wilson(self.passed, self.pairs, confidence)
        if self.resolved:
            ws = wilson(round(self.resolved_weak), self.resolved, confidence)
            rs = wilson(round(self.resolved_reference), self.resolved, confidence)
        else:
            ws, rs = (0.0, 0.0), (1.0, 1.0)
        corners = [self._ratio(p, w, r) for p, w, r in itertools.product(ps, ws, rs)]
        return min(corners), max(corners)

    def grades(self, pair: ShadowPair) -> tuple[float, float] | None:
        """(answer, reference) grades to count for an unresolved disagreement: the resolved means
        (None for other pairs: their own verdicts grade them)."""
        if not pair.disagreement or pair.resolved is not None:
            return None
        return self.weak_mean, self.reference_mean

    def line(self) -> str:
        """One line for logs and the CLI: how the estimate was made."""
        if not self.pairs:
            return "no scored pairs"
        if self.lower_bound:
            return (f"agreement {self.passed}/{self.pairs}: a lower bound ({self.disagreed} disagreements counted "
                    "as losses, none resolved; set shadow.resolve)")
        if not self.disagreed:
            return f"{self.passed}/{self.pairs} pairs passed"
        return (f"agreement {self.passed}/{self.pairs}; {self.resolved} of {self.disagreed} disagreements resolved "
                f"(answer right {self.weak_mean:.0%}, reference right {self.reference_mean:.0%})")

    def to_json(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "passed": self.passed, "judged": self.judged, "disagreed": self.disagreed,
                "resolved": self.resolved, "retained": self.retained, "lower_bound": self.lower_bound}


@dataclass(slots=True, unsafe_hash=True)
class Facts:
    """One trace's facts the dashboard sums (`TraceView.facts`), stored as columns when the trace is
    written, so that SQL sums the same meaning the readers sum in Python."""

    answered: bool
    gated: bool
    escalated: bool
    verdict: str  # the gates' verdict on the served answer: pass (all passed), fail (one failed), none
    verdicts: int  # gate verdicts (shadow ones left out)
    verdicts_passed: int
    cf_input_tokens: int  # what always-reference would have used: the prompt's tokens (counterfactual_cost)
    cf_output_tokens: int  # and the final answer's output tokens
    estimated_calls: int  # calls whose usage the gateway estimated
    pair_reference: str | None  # the shadow pair's recorded reference model
    pair: PairEstimate  # the pairs that judged the final model's answer

    def served(self, final_model: str | None, reference: str | None) -> bool:
        """Whether `pair` judged a served answer: the pair's reference (else `reference`) is not the
        final model (TraceView.served_pairs)."""
        return final_model != (self.pair_reference or reference)


@dataclass(slots=True)
class Totals:
    """Sums of some traces' facts: what the summary and the watch's window figures are computed from.

    The readers build it from views (`add`); the SQL stores from the fact columns (`TraceStore.totals`),
    term for term as `add` does, so both give the same figures. `reference` is the always-strongest
    model the strong share and served pairs are counted against."""

    requests: int = 0
    errors: int = 0  # status other than 200
    routed: int = 0  # a router handled it
    failed: int = 0  # routed and ended in a 5xx
    streamed: int = 0
    spend_usd: float = 0.0  # serving cost of every trace
    estimated_calls: int = 0
    answered: int = 0  # routed and answered; the sums below count these only
    answered_spend_usd: float = 0.0  # serving cost of answered traces
    answered_shadow_usd: float = 0.0  # their shadow work
    cf_input_tokens: int = 0  # the counterfactual's tokens, on answered traces
    cf_output_tokens: int = 0
    gated: int = 0  # answered and gated
    gated_escalated: int = 0  # answered, gated and escalated
    tier1: int = 0  # answered, gated, not escalated (the summary's "accepted at tier 1")
    escalated: int = 0  # answered and escalated
    verdicts: int = 0  # gate verdicts of answered traces
    verdicts_passed: int = 0
    strong: int = 0  # answered by the reference
    served: PairEstimate = field(default_factory=PairEstimate)  # served pairs of answered traces
    start: float | None = None
    end: float | None = None
    by_router: dict[str, int] = field(default_factory=dict)  # "(rejected)" for traces no router handled
    by_endpoint: dict[str, int] = field(default_factory=dict)
    by_cache: dict[str, int] = field(default_factory=dict)  # the cache's result (traces with a cache)
    cache_saved_usd: float = 0.0  # hits' savings

    def add(self, t: TraceView, reference: str | None) -> None:
        """Count one trace."""
        f = t.facts
        self.requests += 1
        self.errors += t.status != 200
        self.streamed += t.streamed
        self.spend_usd += t.cost_usd
        self.estimated_calls += f.estimated_calls
        if t.created is not None:
            self.start = t.created if self.start is None else min(self.start, t.created)
            self.end = t.created if self.end is None else max(self.end, t.created)
        _count(self.by_router, t.router or "(rejected)", 1)
        _count(self.by_endpoint, t.endpoint, 1)
        if t.cache is not None:
            _count(self.by_cache, t.cache, 1)
            self.cache_saved_usd += t.cache_saved_usd if t.cache_hit else 0.0
        if not t.routed:
            return  # rejected before routing (auth, a bad body): no route to judge
        self.routed += 1
        self.failed += t.failed
        if not f.answered:
            return
        self.answered += 1
        self.answered_spend_usd += t.cost_usd
        self.answered_shadow_usd += t.shadow_cost_usd
        self.cf_input_tokens += f.cf_input_tokens
        self.cf_output_tokens += f.cf_output_tokens
        self.gated += f.gated
        self.gated_escalated += f.gated and f.escalated
        self.tier1 += f.gated and not f.escalated
        self.escalated += f.escalated
        self.verdicts += f.verdicts
        self.verdicts_passed += f.verdicts_passed
        self.strong += reference is not None and t.final_model == reference
        if f.served(t.final_model, reference):
            self.served += f.pair

    def merge(self, o: Totals) -> None:
        """Add another set's sums to these."""
        for name in ("requests", "errors", "routed", "failed", "streamed", "spend_usd", "estimated_calls", "answered",
                     "answered_spend_usd", "answered_shadow_usd", "cf_input_tokens", "cf_output_tokens", "gated",
                     "gated_escalated", "tier1", "escalated", "verdicts", "verdicts_passed", "strong",
                     "cache_saved_usd"):
            setattr(self, name, getattr(self, name) + getattr(o, name))
        self.served += o.served
        for mine, theirs in ((self.by_router, o.by_router), (self.by_endpoint, o.by_endpoint),
                             (self.by_cache, o.by_cache)):
            for k, v in theirs.items():
                _count(mine, k, v)
        starts = [v for v in (self.start, o.start) if v is not None]
        ends = [v for v in (self.end, o.end) if v is not None]
        self.start, self.end = min(starts, default=None), max(ends, default=None)

    def counterfactual_cost(self, price: Price) -> float:
        """What the answered traces would have cost on the reference model (TraceView.counterfactual_cost)."""
        return price.cost(self.cf_input_tokens, self.cf_output_tokens)

    def cache_figures(self) -> dict[str, Any]:
        """`cache_figures` of the counted traces."""
        hits, looked = self.by_cache.get("hit", 0), self.by_cache.get("hit", 0) + self.by_cache.get("miss", 0)
        return {"requests": sum(self.by_cache.values()), "by_result": dict(self.by_cache),
                "hit_rate": hits / looked if looked else None, "saved_usd": self.cache_saved_usd}

    @classmethod
    def of(cls, traces: Iterable[Mapping[str, Any] | Trace | TraceView], reference: str | None) -> Totals:
        """The totals of some traces."""
        out = cls()
        for t in map(TraceView.of, traces):
            out.add(t, reference)
        return out


def _count(d: dict[str, int], key: str, n: int) -> None:
    d[key] = d.get(key, 0) + n


__all__ = ["AGREEMENT_METHODS", "ANSWER_ROLES", "GATE_ROLES", "SHADOW_GATE", "SHADOW_GRADE", "SHADOW_REFERENCE",
           "SHADOW_RESOLUTION",
           "CallView", "Facts", "cache_figures", "cache_line", "PairEstimate", "Price", "ShadowPair", "Totals", "TraceView", "VerdictView", "wilson"]
