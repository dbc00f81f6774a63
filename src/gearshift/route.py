"""A route: the decision a router makes for one request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gearshift.request import ChatRequest
from gearshift.trace import Verdict


class StepGate(Protocol):
    """What a step asks of a gate (gates.base.Gate is the implementation): a verdict on an answer,
    now (`check`, the lab replays those) or after a model call (`acheck`, when not `offline`)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def offline(self) -> bool: ...
    @property
    def options(self) -> Any: ...

    def check(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict: ...

    async def acheck(self, request: ChatRequest, answer: str,
                     completion: dict[str, Any] | None = None) -> Verdict: ...


@dataclass(frozen=True, slots=True)
class Step:
    """One model to try. When `gates` is non-empty, its answer is accepted only if they pass.

    `fallbacks` are tried, in order, when this step's upstream fails (errors, not bad answers).
    """

    model: str
    gates: tuple[StepGate, ...] = ()
    fallbacks: tuple[str, ...] = ()


@dataclass(slots=True)
class Route:
    """Ordered steps (first is the primary, later ones are escalations), a reason and a shadow flag."""

    steps: list[Step]
    router: str
    reason: str
    shadow: bool = False
    score: float | None = None  # the router's score, when it has one (classifier, rules never)
    threshold: float | None = None  # a scoring router's threshold, which the score was compared with
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


class Walk:
    """The accept-or-escalate walk of one route, as pure state: the executor (online) and the lab's
    replay (offline) both drive it, so the walk means the same in both.

    Drive it: while `walk.gated`, answer `walk.step`, run its gates and pass their results to
    `judge()`, which returns the index of the step whose answer is returned, or None to go on. When
    `gated` is False the current step answers as it is (an ungated step, or the last one unless
    accept="best"). `notes` say why (shown in x-gearshift-reason).
    """

    __slots__ = ("route", "index", "notes", "_best")

    def __init__(self, route: Route) -> None:
        self.route = route
        self.index = 0
        self.notes: list[str] = []
        self._best: tuple[float, int] | None = None  # (score, step index) of the best-scored failed answer

    @property
    def step(self) -> Step:
        return self.route.steps[self.index]

    @property
    def role(self) -> str:
        """The call's role in the trace: the first step is the primary, later ones escalations."""
        return "primary" if self.index == 0 else "escalation"

    @property
    def gated(self) -> bool:
        """Whether the current step's answer must pass its gates to be accepted."""
        last = self.index == len(self.route.steps) - 1
        return bool(self.step.gates) and not (last and self.route.accept != "best")

    def judge(self, model: str, results: Sequence[tuple[str, bool, float]]) -> int | None:
        """Take the current step's gate results, (gate name, passed, score) each, for the answer of
        `model`: accept when all pass, else escalate; past the last step, the best-scored answer
        (ties: the earlier). Returns the index of the step whose answer is returned, or None."""
        i = self.index
        if all(passed for _, passed, _ in results):
            self.notes.append(f"accepted at tier {i + 1}")
            return i
        failed = [name for name, passed, _ in results if not passed]
        self.notes.append(f"tier {i + 1} ({model}) failed {', '.join(failed) or 'its gates'}")
        score = min((s for _, _, s in results), default=1.0)
        if self._best is None or score > self._best[0]:
            self._best = (score, i)
        if i + 1 < len(self.route.steps):
            self.index += 1
            return None
        best, at = self._best
        self.notes.append(f"no tier passed; best score {best:.2f}")
        return at
