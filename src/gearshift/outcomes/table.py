"""Outcomes: prompts x models -> quality, cost, latency (and response text), the lab's only input.

Columnar numpy arrays, not a dataframe: every lab computation is a vectorised operation over a
(prompts x models) matrix, numpy is already a core dependency, and the gateway can load outcomes
(replay providers) without pulling in pandas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Outcomes:
    """A table of n prompts x m models.

    quality: (n, m) float in [0, 1], NaN where a model has no answer for a prompt.
    cost:    (n, m) USD per call (NaN where unknown).
    latency: (n, m) seconds, or None.
    responses: (n, m) object array of str/None, or None.
    meta: prompt metadata columns, each an array of length n (e.g. task, split, source_id).
    """

    prompts: np.ndarray  # (n,) object array of str
    models: list[str]
    quality: np.ndarray
    cost: np.ndarray
    latency: np.ndarray | None = None
    responses: np.ndarray | None = None
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = "outcomes"
    # True when `cost` holds estimates (e.g. tokens guessed from characters), not billed amounts.
    cost_estimated: bool = False

    def __post_init__(self) -> None:
        n, m = len(self.prompts), len(self.models)
        for label in ("quality", "cost", "latency", "responses"):
            arr = getattr(self, label)
            if arr is not None and arr.shape != (n, m):
                raise ValueError(f"outcomes {label} has shape {arr.shape}, expected ({n}, {m})")
        for key, col in self.meta.items():
            if len(col) != n:
                raise ValueError(f"outcomes meta column {key!r} has {len(col)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.prompts)

    def index(self, model: str) -> int:
        """Column of a model; a clear error names the models there are."""
        try:
            return self.models.index(model)
        except ValueError:
            raise KeyError(f"model {model!r} is not in outcomes {self.name!r}; it has {self.models}") from None

    def subset(self, rows: np.ndarray | Sequence[int]) -> Outcomes:
        """The outcomes of some prompts (a boolean mask or indices)."""
        rows = np.asarray(rows)
        return Outcomes(
            prompts=self.prompts[rows],
            models=list(self.models),
            quality=self.quality[rows],
            cost=self.cost[rows],
            latency=None if self.latency is None else self.latency[rows],
            responses=None if self.responses is None else self.responses[rows],
            meta={k: v[rows] for k, v in self.meta.items()},
            name=self.name,
            cost_estimated=self.cost_estimated,
        )

    def select_models(self, models: Sequence[str]) -> Outcomes:
        """The same prompts with only (and in the order of) `models`."""
        cols = [self.index(m) for m in models]
        return Outcomes(
            prompts=self.prompts,
            models=list(models),
            quality=self.quality[:, cols],
            cost=self.cost[:, cols],
            latency=None if self.latency is None else self.latency[:, cols],
            responses=None if self.responses is None else self.responses[:, cols],
            meta=dict(self.meta),
            name=self.name,
            cost_estimated=self.cost_estimated,
        )

    def split(self, name: str) -> Outcomes:
        """The prompts whose `split` metadata equals `name`."""
        if "split" not in self.meta:
            raise KeyError(f"outcomes {self.name!r} has no `split` column")
        return self.subset(self.meta["split"] == name)

    def metadata_of(self, row: int) -> dict[str, str]:
        """Metadata of one prompt as the gateway would see it in a request."""
        return {k: str(v[row]) for k, v in self.meta.items() if k not in ("split", "source_id")}
