"""`random`: the no-intelligence baseline, weighted, deterministic per prompt text and seed."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from gearshift.config import Config, ShadowConfig
from gearshift.request import ChatRequest
from gearshift.route import Route
from gearshift.routers.base import ScoringOptions, ScoringRouter


class RandomOptions(ScoringOptions):
    weights: dict[str, float] = Field(description="model -> relative weight")
    seed: int = 0


def uniform(text: str, seed: int) -> float:
    """A uniform number in [0, 1) from the text: the same prompt always draws the same number."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=seed.to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little") / 2**64


class RandomRouter(ScoringRouter[RandomOptions]):
    """Picks a model with probability proportional to its weight.

    With two models it is a scoring router (score = the uniform draw), so the lab can sweep the
    strong-call share like any other threshold router.
    """

    kind = "random"
    Options = RandomOptions

    def __init__(self, name: str, options: RandomOptions, fallbacks: Sequence[str] = (),
                 shadow: ShadowConfig | None = None,
                 ranks: dict[str, tuple[Any, ...]] | None = None) -> None:
        super().__init__(name, options, fallbacks, shadow)
        items = [(m, w) for m, w in options.weights.items() if w > 0]
        # Weakest first (by capability rank, then price), whatever order the YAML listed them in.
        if ranks:
            items.sort(key=lambda mw: ranks.get(mw[0], (0,)))
        self._models = [m for m, _ in items]
        total = sum(w for _, w in items)
        self._cum: list[float] = []
        acc = 0.0
        for _, w in items:
            acc += w / total
            self._cum.append(acc)
        # Two-model form: the weak model is the lower-ranked one (the first listed without a config).
        if len(self._models) == 2:
            self.weak, self.strong = self._models
            self.threshold = float(self._cum[0])

    @classmethod
    def from_config(cls, name: str, options: RandomOptions, config: Config, fallbacks: Sequence[str] = (),
                    shadow: ShadowConfig | None = None) -> RandomRouter:
        ranks = {m: (c.rank, c.price.output, c.price.input) for m, c in config.models.items()}
        return cls(name, options, fallbacks, shadow, ranks)

    @classmethod
    def check(cls, name: str, options: RandomOptions, config: Config) -> list[tuple[str, Any, str]]:
        problems: list[tuple[str, Any, str]] = []
        for m, w in options.weights.items():
            if m not in config.models:
                problems.append((f"weights.{m}", m, f"one of the models: {sorted(config.models)}"))
            if w < 0:
                problems.append((f"weights.{m}", w, "a weight >= 0"))
        if not any(w > 0 for w in options.weights.values()):
            problems.append(("weights", dict(options.weights), "at least one weight > 0"))
        return problems

    def score(self, request: ChatRequest) -> float:
        return uniform(request.text(), self.options.seed)

    def route(self, request: ChatRequest) -> Route:
        if len(self._models) == 2:
            return super().route(request)  # the threshold decides, so a recalibrated one takes effect
        u = self.score(request)
        i = min(bisect.bisect_right(self._cum, u), len(self._models) - 1)
        model = self._models[i]
        return Route(steps=[self.step(model)], router=self.name, reason=f"random: draw {u:.3f} -> {model}", score=u)

    def models(self) -> list[str]:
        return list(self._models)
