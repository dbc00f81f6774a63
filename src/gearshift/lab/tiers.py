"""The tier-1/escalated split of cascade requests: per-request facts (from traces or a cascade replay)
and their summary, with the escalation rate's bootstrap interval."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gearshift.lab.bootstrap import Estimate, estimate, resample_counts
from gearshift.store.view import TraceView


@dataclass
class CascadeRecords:
    """Per-request facts of a cascade, from traces or from a cascade replay.

    escalated: (n,) bool, the answer came from a later tier. cost: (n,) USD of every call the
    request made, gates and judges included. latency: (n,) seconds end to end, or None.
    gate_cost: (n,) USD of that spent on gates and judges, or None. quality: (n,) of the accepted
    answer, or None.

    The cascade replay hook: if `gearshift.lab.cascade` defines
    `cascade_records(router, outcomes, *, columns=None)` returning an object with these attributes
    (escalated and cost required, the others optional), the report uses it for routers of kind
    `cascade`; see `cascade_records_from_replay`.
    """

    escalated: np.ndarray
    cost: np.ndarray
    latency: np.ndarray | None = None
    gate_cost: np.ndarray | None = None
    quality: np.ndarray | None = None
    label: str = ""
    source: str = ""


@dataclass
class GroupStats:
    """One group of cascade requests (accepted at tier 1, or escalated)."""

    count: int
    latency_p50: float | None  # seconds
    latency_p95: float | None
    spend: float  # USD, gates included
    gate_spend: float | None


@dataclass
class CascadeSummary:
    label: str
    source: str
    requests: int
    escalation_rate: Estimate
    tier1: GroupStats
    escalated: GroupStats
    spend: float  # total USD, gates included
    gate_spend: float | None
    spend_per_request: Estimate
    quality: Estimate | None = None
    # (tier-1, escalated) latencies in seconds, for the plot.
    latencies: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)


def _pct(x: np.ndarray | None, mask: np.ndarray, q: float) -> float | None:
    if x is None or not mask.any():
        return None
    v = np.asarray(x, float)[mask]
    v = v[~np.isnan(v)]
    return float(np.percentile(v, q)) if len(v) else None


def summarise_cascade(rec: CascadeRecords, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> CascadeSummary:
    """Tier-1 vs escalated split: counts, latency p50/p95, spend including gates, escalation rate."""
    esc = np.asarray(rec.escalated, bool)
    cost = np.asarray(rec.cost, float)
    n = len(esc)
    if n == 0:
        raise ValueError("no cascade requests to summarise")
    gate = None if rec.gate_cost is None else np.asarray(rec.gate_cost, float)
    cols = [esc.astype(float), cost] + ([] if rec.quality is None else [np.asarray(rec.quality, float)])
    table = np.stack(cols, axis=1)
    samples = np.concatenate([w.astype(float) @ table / n for w in resample_counts(n, n_boot, seed)])
    full = table.mean(axis=0)

    def group(mask: np.ndarray) -> GroupStats:
        return GroupStats(count=int(mask.sum()), latency_p50=_pct(rec.latency, mask, 50),
                          latency_p95=_pct(rec.latency, mask, 95), spend=float(cost[mask].sum()),
                          gate_spend=None if gate is None else float(gate[mask].sum()))

    return CascadeSummary(
        label=rec.label, source=rec.source, requests=n,
        escalation_rate=estimate(float(full[0]), samples[:, 0], alpha),
        tier1=group(~esc), escalated=group(esc), spend=float(cost.sum()),
        gate_spend=None if gate is None else float(gate.sum()),
        spend_per_request=estimate(float(full[1]), samples[:, 1], alpha),
        quality=None if rec.quality is None else estimate(float(full[2]), samples[:, 2], alpha),
        latencies=None if rec.latency is None else (np.asarray(rec.latency, float)[~esc], np.asarray(rec.latency, float)[esc]))




def cascade_records_from_traces(traces: Iterable[Mapping[str, Any] | TraceView],
                                router: str | None = None) -> CascadeRecords | None:
    """Cascade requests of stored traces (dicts as TraceStore.traces() yields them, or views), or None.

    A trace is a cascade request when it escalated or a gate judged its answer (TraceView.gated, the
    rule `gearshift traces` follows); shadow work is not part of the request. Spend counts every
    serving call, gates and judges included. router: only traces of that router (or A/B arm).
    """
    esc, cost, lat, gate = [], [], [], []
    for t in map(TraceView.of, traces):
        if not t.answered or (router is not None and not t.of_router(router)):
            continue
        if not (t.escalated or t.gated):
            continue
        esc.append(t.escalated)
        cost.append(t.cost_usd)
        gate.append(t.gate_cost_usd)
        lat.append(t.latency_ms / 1000.0)
    if not esc:
        return None
    return CascadeRecords(escalated=np.array(esc), cost=np.array(cost), latency=np.array(lat),
                          gate_cost=np.array(gate), label=router or "all cascade traffic", source="traces")


__all__ = ["CascadeRecords", "CascadeSummary", "GroupStats", "cascade_records_from_traces", "summarise_cascade"]
