"""A route: the decision a router makes for one request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gearshift.gates.base import Gate


@dataclass(frozen=True, slots=True)
class Step:
    """One model to try. When `gates` is non-empty, its answer is accepted only if they pass.

    `fallbacks` are tried, in order, when this step's upstream fails (errors, not bad answers).
    """

    model: str
    gates: tuple[Gate, ...] = ()
    fallbacks: tuple[str, ...] = ()


@dataclass(slots=True)
class Route:
    """Ordered steps (first is the primary, later ones are escalations), a reason and a shadow flag."""

    steps: list[Step]
    router: str
    reason: str
    shadow: bool = False
    score: float | None = None  # the router's score, when it has one (classifier, rules never)
    accept: str = "last"  # when every gate fails: "last" answer or the "best"-scored one
    arm: str | None = None  # set by a split (A/B) router: the router that made this route
    notes: list[str] = field(default_factory=list)

    @property
    def primary(self) -> str:
        return self.steps[0].model

    def models(self) -> list[str]:
        """Every model this route may call, primary first (escalations, then fallbacks)."""
        seen: list[str] = []
        for step in self.steps:
            for m in (step.model, *step.fallbacks):
                if m not in seen:
                    seen.append(m)
        return seen
