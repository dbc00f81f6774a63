"""`cascade`: try the cheap model first, gate its answer, escalate when the answer falls below the bar.

    routers:
      gearshift/cascade:
        kind: cascade
        tiers:
          - model: mixtral
            gates: [{kind: arithmetic}, {kind: final_answer}]   # all must pass to accept
          - model: gpt-4                                          # the last tier answers whatever it says
        accept: last                      # or `best`: the best-scored answer when every tier fails
        start: {router: gearshift/rules}  # optional: start at the tier of the model that router picks
        latency_quantile: 0.5             # how latency budgets read recent latencies

The route lists the tiers as steps; the gateway's executor calls each step's model, runs its gates
and escalates on failure (gates and judges are calls in the trace). The router itself stays pure
and fast: it decides where the cascade starts (a `start` router in front) and which tiers a
request's latency budget leaves out, reading the gateway's in-memory latency tracker.

Latency budgets: a request may carry `latency_budget_ms` (metadata, or the header
`x-gearshift-latency-budget-ms`). The worst case of a cascade is every tier it tries, one after
the other; a tier is skipped when trying it (its model plus its gates, at the `latency_quantile`
of recent observed latencies) and then still escalating would break the budget. Tiers are decided
from the last (which always answers) back to the first, so the cheap first tier is kept when it
fits before the last, and middle tiers go first. The reason is in the route (x-gearshift-reason).

Judge gates: a judge ranked below the model its tier escalates to (the next tier's) is refused at
config load; `allow_weak_judge: true` on the gate accepts it and logs a warning each time the
gateway starts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from gearshift.config import Config, ShadowConfig
from gearshift.errors import BadRequest, ConfigError
from gearshift.gates.base import GATE_LIST, Gate, build_gate
from gearshift.request import ChatRequest
from gearshift.route import Route, Step
from gearshift.routers.base import Options, Router
from gearshift.services import Services

log = logging.getLogger("gearshift.cascade")

BUDGET_KEY = "latency_budget_ms"
# Kinds whose route() calls another router's: a start router of these kinds could loop.
_DELEGATING = ("cascade", "split")


class TierOptions(Options):
    """One tier: a model, the gates its answer must pass, and optional settings."""

    model: str = Field(description="a model under `models:`")
    gates: list[dict[str, Any] | str] = Field(default_factory=list, description="gates the answer must all pass",
                                              json_schema_extra={GATE_LIST: True})
    fallbacks: list[str] | None = Field(default=None, description="models tried when this one's upstream fails "
                                        "(default: the router's `fallbacks`)")
    latency_ms: float | None = Field(default=None, gt=0, description="expected latency of this tier (model and "
                                     "gates) until the gateway has observed some")


class StartOptions(Options):
    """Where a request enters the cascade: the tier of the model another router picks."""

    router: str = Field(description="a configured router (rules, classifier, ...) whose chosen model names the tier")


class CascadeOptions(Options):
    tiers: list[TierOptions] = Field(min_length=2, description="ordered cheapest first; the last always answers")
    accept: Literal["last", "best"] = Field(default="last", description="when every gated tier fails: the last "
                                            "tier's answer, or the best-scored one")
    start: StartOptions | None = None
    latency_quantile: float = Field(default=0.5, gt=0, lt=1, description="quantile of recent latencies that "
                                    "latency budgets use as a tier's expected time")

    @field_validator("tiers")
    @classmethod
    def _distinct(cls, v: list[TierOptions]) -> list[TierOptions]:
        seen: dict[str, int] = {}
        for i, t in enumerate(v):
            if t.model in seen:
                raise ValueError(f"model {t.model!r} is in tiers {seen[t.model]} and {i}; each tier needs its own model")
            seen[t.model] = i
        return v


def _resolve_paths(spec: dict[str, Any] | str, base_dir: str) -> dict[str, Any] | str:
    """A learned gate's artifact path is relative to the config file."""
    if isinstance(spec, dict) and spec.get("kind") == "learned" and isinstance(spec.get("artifact"), str):
        p = Path(spec["artifact"]).expanduser()
        if not p.is_absolute():
            return {**spec, "artifact": str(Path(base_dir) / p)}
    return spec


def build_tier_gates(name: str, options: CascadeOptions, config: Config) -> tuple[list[tuple[Gate[Any], ...]], list[str]]:
    """Every tier's gates, built and checked; returns them and the weak-judge warnings to log.

    Raises ConfigError naming the key: a bad gate, a judge below the model it escalates to, gates
    on the last tier without accept: best."""
    tiers: list[tuple[Gate[Any], ...]] = []
    warnings: list[str] = []
    last = len(options.tiers) - 1
    for i, tier in enumerate(options.tiers):
        where = f"routers.{name}.tiers.{i}"
        if i == last and tier.gates and options.accept != "best":
            raise ConfigError(f"{where}.gates: the last tier's answer is returned whatever its gates say; "
                              f"remove its gates, or set `accept: best` to return the best-scored answer")
        if i == last and not tier.gates and options.accept == "best":
            raise ConfigError(f"{where}.gates: `accept: best` compares the tiers' gate scores, so the last tier "
                              f"needs gates too (e.g. the same gates as tier 0), or use `accept: last`")
        gates: list[Gate[Any]] = []
        for j, spec in enumerate(tier.gates):
            gate = build_gate(_resolve_paths(spec, config.base_dir), config.models, where=f"{where}.gates.{j}")
            if gate.kind == "judge":
                # The capability rule: against the model this tier escalates to (its own on the last tier).
                target = options.tiers[min(i + 1, last)].model
                warning = gate.check_capability(config.models[target], where=f"{where}.gates.{j}")  # type: ignore[attr-defined]
                if warning:
                    warnings.append(f"router {name}: {warning}")
            gates.append(gate)
        tiers.append(tuple(gates))
    return tiers, warnings


class CascadeRouter(Router[CascadeOptions]):
    """Ordered tiers, cheapest first; each gated tier's answer is accepted only if its gates pass."""

    kind = "cascade"
    Options = CascadeOptions

    def __init__(self, name: str, options: CascadeOptions, fallbacks: Sequence[str] = (),
                 shadow: ShadowConfig | None = None,
                 gates: list[tuple[Gate[Any], ...]] | None = None) -> None:
        super().__init__(name, options, fallbacks, shadow)
        self.tier_models = [t.model for t in options.tiers]
        self.gates = gates if gates is not None else [() for _ in options.tiers]
        self.start_router: Router[Any] | None = None
        self.services: Services | None = None  # the gateway's (attach); None in the lab: no budget skips
        self._steps = [self._step(i) for i in range(len(options.tiers))]

    def _step(self, i: int) -> Step:
        tier = self.options.tiers[i]
        fbs = tier.fallbacks if tier.fallbacks is not None else self.fallbacks
        last = i == len(self.options.tiers) - 1
        gates = self.gates[i] if (not last or self.options.accept == "best") else ()
        return Step(model=tier.model, gates=gates, fallbacks=tuple(f for f in fbs if f != tier.model))

    # -- configuration -----------------------------------------------------------------------

    @classmethod
    def check(cls, name: str, options: CascadeOptions, config: Config) -> list[tuple[str, Any, str]]:
        allowed = f"one of the models: {sorted(config.models)}"
        problems: list[tuple[str, Any, str]] = []
        for i, t in enumerate(options.tiers):
            if t.model not in config.models:
                problems.append((f"tiers.{i}.model", t.model, allowed))
            for k, fb in enumerate(t.fallbacks or []):
                if fb not in config.models:
                    problems.append((f"tiers.{i}.fallbacks.{k}", fb, allowed))
        if options.start is not None:
            others = sorted(r for r, rc in config.routers.items() if r != name and rc.kind not in _DELEGATING)
            if options.start.router not in others:
                problems.append(("start.router", options.start.router,
                                 f"a router that picks a model (not a cascade or split): {others}"))
        if problems:
            return problems
        build_tier_gates(name, options, config)  # raises ConfigError for bad gates and weak judges
        return []

    @classmethod
    def from_config(cls, name: str, options: CascadeOptions, config: Config, fallbacks: Sequence[str] = (),
                    shadow: ShadowConfig | None = None) -> CascadeRouter:
        gates, warnings = build_tier_gates(name, options, config)
        # Built once per gateway start: an allowed weak judge is a warning at every start.
        for w in warnings:
            log.warning("%s", w)
        return cls(name, options, fallbacks, shadow, gates)

    def bind(self, routers: Mapping[str, Router[Any]]) -> None:
        if self.options.start is None:
            return
        start = routers[self.options.start.router]
        outside = [m for m in start.models() if m not in self.tier_models]
        if outside:
            raise ConfigError(f"routers.{self.name}.start.router: router {start.name!r} may pick {outside}, which "
                              f"are not tiers of this cascade ({self.tier_models}); add tiers for them or pick "
                              f"another start router")
        self.start_router = start

    def attach(self, services: Services) -> None:
        """Latency budgets read the gateway's recent latencies; gates (judges) call models through it."""
        self.services = services
        for gates in self.gates:
            for g in gates:
                g.attach(services)

    # -- routing -----------------------------------------------------------------------------

    def route(self, request: ChatRequest) -> Route:
        n = len(self._steps)
        start, notes, score = 0, [], None
        if self.start_router is not None:
            picked = self.start_router.route(request)
            score = picked.score  # a classifier's score stays visible in the trace
            start = self.tier_models.index(picked.primary) if picked.primary in self.tier_models else 0
            notes.append(f"start tier {start + 1} ({self.tier_models[start]}) by {self.start_router.name}: {picked.reason}")
        kept = list(range(start, n))
        budget = _budget(request)
        if budget is not None and len(kept) > 1:
            kept, skipped = self._fit_budget(kept, budget)
            if skipped:
                notes.insert(0, f"latency budget {budget:.0f}ms: " + "; ".join(skipped))
        steps = [self._steps[i] for i in kept]
        path = " -> ".join(self.tier_models[i] + (f"[{','.join(g.name for g in self._steps[i].gates)}]"
                                                   if self._steps[i].gates else "") for i in kept)
        reason = "cascade: " + "; ".join([*notes, path])
        return Route(steps=steps, router=self.name, reason=reason, accept=self.options.accept, score=score)

    def expected_ms(self, i: int) -> float | None:
        """Expected time of trying tier i: its model plus its gates, from recent observed latencies
        (the tier's `latency_ms` until some are observed; None when nothing is known)."""
        step = self._steps[i]
        q = self.options.latency_quantile
        prior = self.options.tiers[i].latency_ms
        services = self.services
        model = services.expected_latency(step.model, q) if services is not None else None
        if services is None or model is None:
            return prior
        total = model
        for g in step.gates:
            seen = services.expected_latency(f"gate:{g.name}", q)
            if seen is None and g.kind == "judge":
                seen = services.expected_latency(g.options.model, q)
            total += seen or 0.0
        return float(total)

    def _fit_budget(self, kept: list[int], budget: float) -> tuple[list[int], list[str]]:
        """Keep the last tier; walking back, keep a tier only if it plus every kept tier after it fits."""
        last = kept[-1]
        last_ms = self.expected_ms(last) or 0.0
        after = last_ms
        keep, skipped = [last], []
        for i in reversed(kept[:-1]):
            t = self.expected_ms(i)
            if t is None:  # nothing observed and no prior: no reason to skip
                keep.append(i)
                continue
            if t + after > budget:
                skipped.append(f"skip tier {i + 1} ({self.tier_models[i]}): expected {t:.0f}ms + {after:.0f}ms "
                               f"after it > {budget:.0f}ms")
            else:
                keep.append(i)
                after += t
        skipped.reverse()
        if last_ms > budget:
            skipped.append(f"tier {last + 1} ({self.tier_models[last]}) alone expects {last_ms:.0f}ms")
        return sorted(keep), skipped

    def models(self) -> list[str]:
        return list(self.tier_models)


def _budget(request: ChatRequest) -> float | None:
    raw = request.metadata.get(BUDGET_KEY)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise BadRequest(f"{BUDGET_KEY} must be a positive number of milliseconds, got {raw!r} (metadata "
                         f"`{BUDGET_KEY}` or header `x-gearshift-latency-budget-ms`)", param=BUDGET_KEY)
    return value


__all__ = ["BUDGET_KEY", "CascadeOptions", "CascadeRouter", "StartOptions", "TierOptions", "build_tier_gates"]
