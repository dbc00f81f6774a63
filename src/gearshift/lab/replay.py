"""Replay routers over recorded outcomes: per-prompt decisions, and threshold sweeps as curves.

- `replay(router, outcomes)` runs any Router's `route()` on every prompt, exactly as the gateway
  would, and looks up what the chosen model's recorded answer was worth (quality) and cost.
- `sweep(router, outcomes)` scores every prompt once with a ScoringRouter and evaluates every
  distinct threshold in one vectorised pass (`sweep_scores`): sort the scores, take cumulative sums
  of the strong-minus-weak differences, read them off at the ends of each group of tied scores.
- `replay_cascade(router, outcomes)` walks each route's steps over the recorded answers with the
  gateway executor's own walk (`route.Walk`): gates run on the text, accept or escalate, every call
  counted; `cascade_outcome` is the same walk as a `replay` hook.

A Curve's operating points run from all-weak (threshold +inf, strong share 0) to all-strong (the
lowest score, share 1). Between two adjacent points the curve is linear: that is exactly what a
router achieves by randomising between the two thresholds, so metrics integrate it exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gearshift.gates.judge import RECORDED_JUDGE
from gearshift.gates.logprob import recorded_completion
from gearshift.outcomes.table import Outcomes
from gearshift.request import ChatRequest
from gearshift.route import Route, Walk
from gearshift.routers.base import Router, ScoringRouter

# --- per-prompt replay ---------------------------------------------------------------------------


@dataclass
class Decisions:
    """What a router did on each prompt of an outcomes table.

    choice: (n,) index into `models` (the outcomes' models) of the model whose answer counts.
    quality, cost: (n,) what that answer was worth and what the route cost (NaN if unknown).
    """

    models: list[str]
    choice: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    router: str = ""

    def __len__(self) -> int:
        return len(self.choice)

    def share(self, model: str) -> float:
        """Fraction of prompts answered by `model`."""
        return float(np.mean(self.choice == self.models.index(model)))

    @property
    def mean_quality(self) -> float:
        return float(np.mean(self.quality))

    @property
    def mean_cost(self) -> float:
        return float(np.mean(self.cost))


# Maps one route to (answering model's column, cost, quality) for one outcomes row. The default
# reads the primary step only; `cascade_outcome` walks the steps, runs the gates on recorded
# responses and sums the cost of every call made.
RouteOutcome = Callable[[Route, Outcomes, int, Callable[[str], int]], tuple[int, float, float]]


def primary_outcome(route: Route, outcomes: Outcomes, row: int, column: Callable[[str], int]) -> tuple[int, float, float]:
    """The primary step's model answers; its recorded cost and quality are the route's."""
    j = column(route.primary)
    return j, float(outcomes.cost[row, j]), float(outcomes.quality[row, j])


def requests(outcomes: Outcomes) -> list[ChatRequest]:
    """One single-turn request per prompt, with the prompt's metadata, as the gateway would see it."""
    return [ChatRequest.from_prompt(str(p), outcomes.metadata_of(i)) for i, p in enumerate(outcomes.prompts)]


def column_of(outcomes: Outcomes, columns: Mapping[str, str] | None) -> Callable[[str], int]:
    """A cached lookup of a model's column; `columns` maps config model names to outcomes columns."""
    cache: dict[str, int] = {}

    def column(model: str) -> int:
        if model not in cache:
            cache[model] = outcomes.index((columns or {}).get(model, model))
        return cache[model]

    return column


def replay(router: Router, outcomes: Outcomes, *, columns: Mapping[str, str] | None = None,
           outcome_of: RouteOutcome = primary_outcome,
           progress: Callable[[int, int], None] | None = None) -> Decisions:
    """Run `router.route()` on every prompt and score the routes with `outcome_of`.

    columns: router model name -> outcomes column, when they differ (e.g. gateway model names vs
    dataset columns). progress(done, total) is called every 1,000 prompts and at the end.
    """
    n = len(outcomes)
    column = column_of(outcomes, columns)
    choice = np.empty(n, dtype=np.int64)
    quality = np.empty(n)
    cost = np.empty(n)
    for i, req in enumerate(requests(outcomes)):
        choice[i], cost[i], quality[i] = outcome_of(router.route(req), outcomes, i, column)
        if progress and (i + 1) % 1000 == 0:
            progress(i + 1, n)
    if progress:
        progress(n, n)
    return Decisions(models=list(outcomes.models), choice=choice, quality=quality, cost=cost, router=router.name)


def fixed_decisions(outcomes: Outcomes, model: str) -> Decisions:
    """Always `model` (the always-weak / always-strong baselines)."""
    j = outcomes.index(model)
    n = len(outcomes)
    return Decisions(models=list(outcomes.models), choice=np.full(n, j), quality=np.asarray(outcomes.quality[:, j], float),
                     cost=np.asarray(outcomes.cost[:, j], float), router=f"always {model}")


# --- threshold sweeps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold's result: share of calls to the strong model, mean quality, mean cost per prompt."""

    threshold: float
    strong_share: float
    quality: float
    cost: float


@dataclass(frozen=True)
class Curve:
    """Operating points of a two-model threshold router, all-weak first, all-strong last.

    threshold: (k,) descending; point i sends a prompt strong when its score >= threshold[i]
    (threshold[0] = +inf sends none). strong_share, quality, cost: (..., k); a leading batch
    dimension holds bootstrap resamples of the same thresholds. Between adjacent points the curve
    is linear (randomising between the two thresholds achieves it).
    """

    threshold: np.ndarray
    strong_share: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    weak: str
    strong: str
    n: int
    label: str = ""

    def __len__(self) -> int:
        return int(self.threshold.shape[0])

    @property
    def q_weak(self) -> np.ndarray | float:
        """Always-weak quality on these prompts (the first point)."""
        return self.quality[..., 0]

    @property
    def q_strong(self) -> np.ndarray | float:
        """Always-strong quality on these prompts (the last point)."""
        return self.quality[..., -1]

    @property
    def pgr(self) -> np.ndarray:
        """Performance gap recovered at each point (metrics.pgr against the curve's own end points)."""
        from gearshift.lab.metrics import pgr  # metrics imports this module: the one definition lives there

        return pgr(self.quality, self.quality[..., :1], self.quality[..., -1:])

    def index_at(self, threshold: float) -> int:
        """Index of the point a router with this threshold operates at."""
        return int(np.flatnonzero(self.threshold >= threshold)[-1])

    def point(self, i: int) -> OperatingPoint:
        if self.quality.ndim != 1:
            raise ValueError("point() needs a single curve, not a bootstrap batch")
        return OperatingPoint(threshold=float(self.threshold[i]), strong_share=float(self.strong_share[i]),
                              quality=float(self.quality[i]), cost=float(self.cost[i]))

    def at(self, threshold: float) -> OperatingPoint:
        """The operating point of a router configured with `threshold`."""
        return self.point(self.index_at(threshold))


@dataclass(frozen=True)
class ScoreOrder:
    """Prompts sorted by score (highest first) and the operating points over that order.

    ends[i] is how many of the top-sorted prompts go strong at point i (0 ... n, strictly
    increasing); threshold[i] is the threshold that sends exactly those. Ties are exact: a group
    of equal scores is never split, because one threshold sends all of it the same way.
    """

    order: np.ndarray
    ends: np.ndarray
    threshold: np.ndarray

    @classmethod
    def from_scores(cls, scores: np.ndarray, thresholds: Sequence[float] | np.ndarray | None = None) -> ScoreOrder:
        s = np.asarray(scores, dtype=float)
        if s.ndim != 1:
            raise ValueError(f"scores must be one per prompt, got shape {s.shape}")
        if np.isnan(s).any():
            raise ValueError(f"{int(np.isnan(s).sum())} scores are NaN")
        n = len(s)
        order = np.argsort(-s, kind="stable")
        desc = s[order]
        if thresholds is None:
            # A group ends where the next score is lower; the group's own score is its threshold.
            group_end = np.flatnonzero(desc[1:] != desc[:-1]) + 1
            ends = np.concatenate([[0], group_end, [n]]) if n else np.array([0])
            thr = np.concatenate([[np.inf], desc[ends[1:] - 1]])
        else:
            t = np.sort(np.unique(np.asarray(thresholds, dtype=float)))[::-1]
            asc = desc[::-1]
            k = n - np.searchsorted(asc, t, side="left")  # prompts with score >= t
            ks, first = np.unique(np.concatenate([[0], k, [n]]), return_index=True)
            # For each distinct count keep the highest threshold giving it; ends use +inf / -inf.
            cand = np.concatenate([[np.inf], t, [-np.inf if n == 0 else desc[-1]]])
            ends, thr = ks, cand[first]
        return cls(order=order, ends=ends.astype(np.int64), threshold=thr)

    def curve(self, outcomes: Outcomes, weak: str, strong: str, label: str = "",
              weights: np.ndarray | None = None) -> Curve:
        """The curve over these points; `weights` (B, n) per-prompt resample counts give a batch of B curves."""
        w, s = outcomes.index(weak), outcomes.index(strong)
        q = np.asarray(outcomes.quality[:, [w, s]], dtype=float)
        if np.isnan(q).any():
            bad = int(np.isnan(q).any(axis=1).sum())
            raise ValueError(f"{bad} prompts of {outcomes.name!r} lack a quality for {weak!r} or {strong!r}; "
                             f"sweep a subset with both (e.g. outcomes.subset(~np.isnan(outcomes.quality[:, [i, j]]).any(1)))")
        c = np.asarray(outcomes.cost[:, [w, s]], dtype=float)
        o = self.order
        qw, dq = q[o, 0], q[o, 1] - q[o, 0]
        cw, dc = c[o, 0], c[o, 1] - c[o, 0]
        n = len(o)
        if n == 0:
            raise ValueError("cannot sweep zero prompts")
        if weights is None:
            cum_q = np.concatenate([[0.0], np.cumsum(dq)])[self.ends]
            cum_c = np.concatenate([[0.0], np.cumsum(dc)])[self.ends]
            quality = (qw.sum() + cum_q) / n
            cost = (cw.sum() + cum_c) / n
            share = self.ends / n
        else:
            # Resampled curves in float32: exact for counts and 0/1 quality (integer sums below 2^24),
            # ~1e-6 relative otherwise, which is far below any interval's width; 3-5x faster.
            wts = np.asarray(weights)[:, o].astype(np.float32)
            vals = np.stack([np.ones(n), dq, dc]).astype(np.float32)
            prod = wts[None, :, :] * vals[:, None, :]
            # Cumulative sums read off at the group ends (faster than reduceat over groups).
            at_ends = np.cumsum(prod, axis=2)[:, :, self.ends[1:] - 1]
            cums = np.concatenate([np.zeros((3, wts.shape[0], 1), np.float32), at_ends], axis=2)
            base = wts @ np.stack([qw, cw], axis=1).astype(np.float32)
            share = cums[0].astype(float) / n
            quality = (base[:, :1].astype(float) + cums[1]) / n
            cost = (base[:, 1:].astype(float) + cums[2]) / n
        return Curve(threshold=self.threshold, strong_share=share, quality=quality, cost=cost,
                     weak=weak, strong=strong, n=n, label=label)


def sweep_scores(scores: np.ndarray, outcomes: Outcomes, weak: str, strong: str,
                 thresholds: Sequence[float] | np.ndarray | None = None, label: str = "") -> Curve:
    """Evaluate every threshold of a score in one vectorised pass.

    scores: (n,) one per prompt; a prompt goes to `strong` when score >= threshold.
    thresholds: None for every distinct operating point (each distinct score), or the thresholds to
    evaluate (duplicates of an operating point are merged). Both ends are always included.
    """
    return ScoreOrder.from_scores(scores, thresholds).curve(outcomes, weak, strong, label)


def operating_point(scores: np.ndarray, outcomes: Outcomes, weak: str, strong: str, threshold: float) -> OperatingPoint:
    """Strong share, mean quality and mean cost when prompts with score >= threshold go strong."""
    w, s = outcomes.index(weak), outcomes.index(strong)
    to_strong = np.asarray(scores, dtype=float) >= threshold
    q = np.where(to_strong, outcomes.quality[:, s], outcomes.quality[:, w])
    c = np.where(to_strong, outcomes.cost[:, s], outcomes.cost[:, w])
    return OperatingPoint(threshold=float(threshold), strong_share=float(to_strong.mean()),
                          quality=float(q.mean()), cost=float(c.mean()))


def router_scores(router: ScoringRouter, outcomes: Outcomes) -> np.ndarray:
    """The router's score of every prompt (one batched `scores()` call)."""
    return np.asarray(router.scores(requests(outcomes)), dtype=float)


def sweep(router: ScoringRouter, outcomes: Outcomes, thresholds: Sequence[float] | np.ndarray | None = None,
          *, columns: Mapping[str, str] | None = None) -> Curve:
    """Score every prompt once with the router, then sweep its threshold (see sweep_scores)."""
    cols = columns or {}
    return sweep_scores(router_scores(router, outcomes), outcomes, cols.get(router.weak, router.weak),
                        cols.get(router.strong, router.strong), thresholds, label=router.name)


# --- replaying cascade routers, step by step ------------------------------------------------------------


@dataclass
class CascadeReplay:
    """A cascade router replayed prompt by prompt, as the gateway's executor would run it.

    choice: (n,) outcomes column of the answer returned; tier: (n,) index of its step in the
    route; escalated: (n,) the answer came from a later step than the first; quality, cost (every
    call, gates included), gate_cost, gate_seconds (measured here), latency (seconds, from the
    outcomes' recorded latencies plus measured gate time; None when the outcomes have none).
    Attribute names follow the lab report's cascade hook (see gearshift.lab.report.CascadeRecords).
    """

    models: list[str]
    choice: np.ndarray
    tier: np.ndarray
    escalated: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    gate_cost: np.ndarray
    gate_seconds: np.ndarray
    latency: np.ndarray | None
    router: str = ""

    def __len__(self) -> int:
        return len(self.choice)

    @property
    def escalation_rate(self) -> float:
        return float(self.escalated.mean())

    def summary(self) -> dict[str, Any]:
        """Accepted-at-tier-1 against escalated: count, quality, spend incl. gates, latency p50/p95."""
        out: dict[str, Any] = {"requests": len(self), "escalation_rate": self.escalation_rate,
                               "quality": float(np.nanmean(self.quality)), "spend_usd": float(self.cost.sum()),
                               "gate_spend_usd": float(self.gate_cost.sum())}
        for label, mask in (("accepted_at_tier1", ~self.escalated), ("escalated", self.escalated)):
            lat = None if self.latency is None else self.latency[mask]
            out[label] = {"count": int(mask.sum()), "spend_usd": float(self.cost[mask].sum()),
                          "latency_p50_s": float(np.percentile(lat, 50)) if lat is not None and len(lat) else None,
                          "latency_p95_s": float(np.percentile(lat, 95)) if lat is not None and len(lat) else None}
        return out


def recorded(outcomes: Outcomes, row: int, column: int, text: str) -> dict[str, Any] | None:
    """What a gate's `check` gets as the completion of a recorded answer: its mean token logprob when
    the outcomes carry one (the `<model>|logprob` column) and a judge's recorded verdict on it (the
    `<model>|judge` columns), else nothing."""
    lp = np.nan if outcomes.logprob is None else float(outcomes.logprob[row, column])
    judged = np.nan if outcomes.judge is None else float(outcomes.judge[row, column])
    if np.isnan(lp) and np.isnan(judged):
        return None
    completion: dict[str, Any] = {"choices": [{"message": {"role": "assistant", "content": text}}]}
    if not np.isnan(lp):
        completion = recorded_completion(text, lp)
    if not np.isnan(judged):
        cost = np.nan if outcomes.judge_cost is None else float(outcomes.judge_cost[row, column])
        seconds = np.nan if outcomes.judge_latency is None else float(outcomes.judge_latency[row, column])
        completion[RECORDED_JUDGE] = {"score": judged, "cost_usd": None if np.isnan(cost) else cost,
                                      "latency_ms": None if np.isnan(seconds) else seconds * 1000}
    return completion


def _replays_judge(gate: Any, outcomes: Outcomes, model: str) -> bool:
    """A judge gate the lab can replay: the outcomes record its verdicts on `model`'s answers."""
    return bool(gate.replays_recorded and outcomes.judge is not None
                and not np.isnan(outcomes.judge[:, outcomes.index(model)]).all())


def check_recorded(gates: Sequence[Any], outcomes: Outcomes, model: str) -> None:
    """Refuse gates the recorded outcomes cannot drive: model calls (self_consistency; a judge unless its
    verdicts are recorded, `<model>|judge`), and confidence gates without a `<model>|logprob` column
    (they would fail every answer)."""
    for g in gates:
        if not g.offline and not _replays_judge(g, outcomes, model):
            raise ValueError(f"gate {g.name!r} (kind {g.kind}) calls a model; the lab cannot replay it on recorded "
                             f"text. Replay the programmatic and learned gates, record a judge's verdicts "
                             f"(`{model}|judge` columns, or traces), or record its verdicts in traces")
        if getattr(g, "needs_logprobs", False) and (
                outcomes.logprob is None or np.isnan(outcomes.logprob[:, outcomes.index(model)]).all()):
            raise ValueError(f"gate {g.name!r} (kind {g.kind}) reads token logprobs; outcomes {outcomes.name!r} "
                             f"have no `{model}|logprob` column (see docs/outcomes-format.md)")


@dataclass
class _Walked:
    column: int
    tier: int
    cost: float
    gate_cost: float
    gate_seconds: float
    latency: float


def _walk(route: Route, outcomes: Outcomes, row: int, column: Callable[[str], int],
          request: ChatRequest) -> _Walked:
    """Run one route on recorded answers with the executor's walk (route.Walk): each step's recorded
    answer, its gates run on the text, accept or escalate as the gateway would."""
    # `cost` sums the model calls; the gates' own cost is added once, when the walk ends.
    cost = gate_cost = gate_seconds = latency = 0.0
    walk = Walk(route)
    columns: list[int] = []  # each step's outcomes column, by step index
    while True:
        step = walk.step
        j = column(step.model)
        columns.append(j)
        cost += float(outcomes.cost[row, j])
        if outcomes.latency is not None:
            latency += float(outcomes.latency[row, j])
        if not walk.gated:
            return _Walked(j, walk.index, cost + gate_cost, gate_cost, gate_seconds, latency)
        if outcomes.responses is None:
            raise ValueError(f"outcomes {outcomes.name!r} keep no response text: the gates of "
                             f"{step.model!r} need its recorded answers")
        text = outcomes.responses[row, j] or ""
        check_recorded(step.gates, outcomes, outcomes.models[j])
        completion = recorded(outcomes, row, j, text)
        t0 = time.perf_counter()
        results = []
        judged = 0.0  # recorded judging time: a judge replayed from its verdicts takes no time here
        for g in step.gates:
            v = g.check(request, text, completion)
            results.append((g.name, v.passed, v.score))
            gate_cost += v.cost_usd
            judged += v.latency_ms / 1000
        spent = max(time.perf_counter() - t0, judged)
        gate_seconds += spent
        latency += spent
        chosen = walk.judge(step.model, results)
        if chosen is not None:
            return _Walked(columns[chosen], chosen, cost + gate_cost, gate_cost, gate_seconds, latency)


def cascade_outcome(route: Route, outcomes: Outcomes, row: int, column: Callable[[str], int]) -> tuple[int, float, float]:
    """A `replay.RouteOutcome` for cascades: walks the steps, running the gates on recorded answers;
    cost counts every call made (cheap, gates, expensive). Use as `replay(router, o, outcome_of=cascade_outcome)`."""
    req = ChatRequest.from_prompt(str(outcomes.prompts[row]), outcomes.metadata_of(row))
    w = _walk(route, outcomes, row, column, req)
    return w.column, w.cost, float(outcomes.quality[row, w.column])


def replay_cascade(router: Router, outcomes: Outcomes, *, columns: Mapping[str, str] | None = None) -> CascadeReplay:
    """Run `router.route()` on every prompt and walk each route over the recorded answers."""
    n = len(outcomes)
    column = column_of(outcomes, columns)
    walks = []
    for i, req in enumerate(requests(outcomes)):
        walks.append(_walk(router.route(req), outcomes, i, column, req))
    choice = np.array([w.column for w in walks], dtype=np.int64)
    tier = np.array([w.tier for w in walks], dtype=np.int64)
    rows = np.arange(n)
    return CascadeReplay(
        models=list(outcomes.models), choice=choice, tier=tier, escalated=tier > 0,
        quality=np.asarray(outcomes.quality, float)[rows, choice] if n else np.zeros(0),
        cost=np.array([w.cost for w in walks]), gate_cost=np.array([w.gate_cost for w in walks]),
        gate_seconds=np.array([w.gate_seconds for w in walks]),
        latency=None if outcomes.latency is None else np.array([w.latency for w in walks]),
        router=router.name)


def cascade_records(router: Router, outcomes: Outcomes, *, columns: Mapping[str, str] | None = None) -> CascadeReplay:
    """The lab report's cascade hook (gearshift.lab.report.cascade_records_from_replay)."""
    return replay_cascade(router, outcomes, columns=columns)


__all__ = [
    "CascadeReplay", "Curve", "Decisions", "OperatingPoint", "RouteOutcome", "ScoreOrder", "cascade_outcome",
    "cascade_records", "column_of", "fixed_decisions", "operating_point", "primary_outcome", "replay",
    "recorded", "replay_cascade", "requests", "router_scores", "sweep", "sweep_scores",
]
