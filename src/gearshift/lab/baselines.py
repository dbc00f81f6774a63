"""Lab-only heuristic baselines: a router with no training that a learned router must beat.

`length`: longer prompts go to the strong model. It is the swept form of a token-length rule
(the `rules` router's `min_tokens`), so the report can show the whole curve of that rule, not one
point. It is not a gateway router kind: it exists to be compared against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gearshift.request import ChatRequest
from gearshift.route import Route
from gearshift.routers.base import ScoringRouter

# Prompt tokens at which the length score is 0.5; only the order of scores matters for a sweep.
LENGTH_SCALE_TOKENS = 100.0

BUILTIN_BASELINES = ("length",)


class LengthRouter(ScoringRouter):
    """Score = t / (t + scale) for t estimated prompt tokens: monotone in length, in [0, 1).

    threshold None: not set yet; the report sets it to the median score of its prompts (the longer
    half goes strong, like random's half), and calibration replaces it anyway.
    """

    kind = "length"

    def __init__(self, name: str, weak: str, strong: str, threshold: float | None = None,
                 scale: float = LENGTH_SCALE_TOKENS) -> None:
        super().__init__(name, None)
        self.weak, self.strong, self.scale = weak, strong, scale
        self.threshold = threshold  # type: ignore[assignment]

    def score(self, request: ChatRequest) -> float:
        t = float(request.estimated_tokens())
        return t / (t + self.scale)

    def route(self, request: ChatRequest) -> Route:
        if self.threshold is None:
            raise ValueError(f"{self.name}: no threshold set; calibrate it or set one")
        return super().route(request)

    def scores(self, requests: Sequence[ChatRequest]) -> np.ndarray:
        t = np.fromiter((r.estimated_tokens() for r in requests), dtype=float, count=len(requests))
        return np.asarray(t / (t + self.scale))


def baseline(name: str, weak: str, strong: str, **options: Any) -> ScoringRouter:
    """A built-in baseline by name (see BUILTIN_BASELINES)."""
    if name == "length":
        return LengthRouter("length", weak, strong, **options)
    raise KeyError(f"no built-in baseline {name!r}; there are {list(BUILTIN_BASELINES)}")


__all__ = ["BUILTIN_BASELINES", "LengthRouter", "baseline"]
