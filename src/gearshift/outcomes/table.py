"""Outcomes: prompts x models -> quality, cost, latency (and response text), the lab's only input.

Columnar numpy arrays, not a dataframe: every lab computation is a vectorised operation over a
(prompts x models) matrix, numpy is already a core dependency, and the gateway can load outcomes
(replay providers) without pulling in pandas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from gearshift.store.view import PairEstimate

JUDGE_FIELDS = ("judge", "judge_cost", "judge_latency")


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
    # (n, m) mean token logprob of each answer (NaN unknown), or None: what confidence gates read offline.
    logprob: np.ndarray | None = None
    # (n, m) a judge gate's recorded verdict on each answer: its score in [0, 1], what judging cost (USD)
    # and took (seconds); NaN unknown. What judge gates read offline (lab.gating), or None.
    judge: np.ndarray | None = None
    judge_cost: np.ndarray | None = None
    judge_latency: np.ndarray | None = None
    # From shadow pairs (outcomes.datasets.from_traces): how their grades were estimated, and whether
    # they are a lower bound (disagreements counted as losses, none resolved). None for benchmarks.
    pair_estimate: PairEstimate | None = None

    def __post_init__(self) -> None:
        n, m = len(self.prompts), len(self.models)
        for label in ("quality", "cost", "latency", "responses", "logprob", *JUDGE_FIELDS):
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
            logprob=None if self.logprob is None else self.logprob[rows],
            pair_estimate=self.pair_estimate,
            judge=None if self.judge is None else self.judge[rows],
            judge_cost=None if self.judge_cost is None else self.judge_cost[rows],
            judge_latency=None if self.judge_latency is None else self.judge_latency[rows],
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
            logprob=None if self.logprob is None else self.logprob[:, cols],
            pair_estimate=self.pair_estimate,
            judge=None if self.judge is None else self.judge[:, cols],
            judge_cost=None if self.judge_cost is None else self.judge_cost[:, cols],
            judge_latency=None if self.judge_latency is None else self.judge_latency[:, cols],
        )

    def unanswered(self) -> list[str]:
        """Models with no quality on any prompt: nothing can be measured or learned about them."""
        empty = np.isnan(np.asarray(self.quality, dtype=float)).all(axis=0) if len(self) else np.ones(len(self.models), bool)
        return [m for m, e in zip(self.models, empty, strict=True) if e]

    def split(self, name: str) -> Outcomes:
        """The prompts whose `split` metadata equals `name`."""
        if "split" not in self.meta:
            raise KeyError(f"outcomes {self.name!r} has no `split` column")
        return self.subset(self.meta["split"] == name)

    def metadata_of(self, row: int) -> dict[str, str]:
        """Metadata of one prompt as the gateway would see it in a request."""
        return {k: str(v[row]) for k, v in self.meta.items() if k not in ("split", "source_id")}


def concat(tables: Sequence[Outcomes], name: str | None = None) -> Outcomes:
    """The prompts of several tables, one after the other, over the union of their models.

    A model a table lacks has no answer there (quality and cost NaN). Metadata columns a table lacks
    are empty strings."""
    if len(tables) == 1:
        return tables[0]
    models = list(dict.fromkeys(m for t in tables for m in t.models))
    keys = list(dict.fromkeys(k for t in tables for k in t.meta))

    def widen(t: Outcomes, values: np.ndarray | None, fill: object, dtype: type) -> np.ndarray:
        out: np.ndarray = np.full((len(t), len(models)), fill, dtype=dtype)
        if values is not None:
            for j, m in enumerate(t.models):
                out[:, models.index(m)] = values[:, j]
        return out

    any_latency = any(t.latency is not None for t in tables)
    any_text = any(t.responses is not None for t in tables)
    any_logprob = any(t.logprob is not None for t in tables)

    def judged(k: str) -> np.ndarray | None:
        if all(getattr(t, k) is None for t in tables):
            return None
        return np.concatenate([widen(t, getattr(t, k), np.nan, float) for t in tables])

    return Outcomes(
        prompts=np.concatenate([t.prompts for t in tables]),
        models=models,
        quality=np.concatenate([widen(t, t.quality, np.nan, float) for t in tables]),
        cost=np.concatenate([widen(t, t.cost, np.nan, float) for t in tables]),
        latency=np.concatenate([widen(t, t.latency, np.nan, float) for t in tables]) if any_latency else None,
        responses=np.concatenate([widen(t, t.responses, None, object) for t in tables]) if any_text else None,
        meta={k: np.concatenate([t.meta.get(k, np.full(len(t), "", dtype=object)) for t in tables]) for k in keys},
        name=name or " + ".join(t.name for t in tables),
        cost_estimated=any(t.cost_estimated for t in tables),
        logprob=np.concatenate([widen(t, t.logprob, np.nan, float) for t in tables]) if any_logprob else None,
        judge=judged("judge"), judge_cost=judged("judge_cost"), judge_latency=judged("judge_latency"),
    )


def assign_parts(outcomes: Outcomes, parts: Mapping[str, float], seed: int = 0, by: str | None = None) -> Outcomes:
    """The same table with a `split` column dealing the prompts into `parts` (name -> share) at random.

    With `by` (a metadata key, e.g. task), each value's prompts are dealt alike, so every part has the
    same mix. Shares are normalised; each part gets its share of each group, rounded, the last the rest."""
    if not parts or any(s <= 0 for s in parts.values()):
        raise ValueError("parts need positive shares, e.g. train=0.6 calibrate=0.2 test=0.2")
    names = list(parts)
    shares = np.array([parts[n] for n in names], dtype=float)
    bounds = np.cumsum(shares / shares.sum())
    if by is not None and by not in outcomes.meta:
        raise KeyError(f"metadata {by!r} is not in {outcomes.name}; it has {sorted(outcomes.meta)}")
    groups = outcomes.meta[by] if by is not None else np.zeros(len(outcomes), dtype=object)
    rng = np.random.default_rng(seed)
    split = np.empty(len(outcomes), dtype=object)
    for g in sorted(set(groups.tolist()), key=str):
        rows = rng.permutation(np.flatnonzero(groups == g))
        cuts = np.round(bounds * len(rows)).astype(int)
        for name, lo, hi in zip(names, np.r_[0, cuts[:-1]], cuts, strict=True):
            split[rows[lo:hi]] = name
    meta = {**outcomes.meta, "split": split}
    return Outcomes(prompts=outcomes.prompts, models=list(outcomes.models), quality=outcomes.quality,
                    cost=outcomes.cost, latency=outcomes.latency, responses=outcomes.responses, meta=meta,
                    name=outcomes.name, cost_estimated=outcomes.cost_estimated, logprob=outcomes.logprob,
                    pair_estimate=outcomes.pair_estimate, judge=outcomes.judge, judge_cost=outcomes.judge_cost,
                    judge_latency=outcomes.judge_latency)

