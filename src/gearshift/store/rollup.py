"""Hourly rollups of the traces' facts, kept by the trace writer: what the dashboard's overview sums over a
range without reading every trace of it.

Per hour (`floor(created / 3600)`), three tables of plain sums, each row added to by an UPSERT per batch:
- `rollup_totals`: per group of what decides what a trace adds to `view.Totals` (the groups
  `TraceStore.totals` groups by, with the final model in place of the query-time "strong"), the sums
  that query takes (requests, streamed, cost, shadow cost, estimated calls, the counterfactual's tokens,
  gate verdicts, cache savings);
- `rollup_calls`: calls and spend per (model, role), what `call_spend` gives;
- `rollup_latency`: a histogram of the latency of answered traces accepted at tier 1 (gated, not escalated)
  and of escalated ones, in fixed log-spaced buckets (`BUCKET_RATIO` wide: a percentile read from it is
  the geometric middle of its bucket, within 1% of the exact value's bucket edges).
The served shadow pairs' sums are in `rollup_totals` too, grouped by the pair's recorded reference, so
that which pairs were served is decided when the range is read, against that read's reference. A trace written again (its shadow pair arrived) first takes back what its stored row
added, so nothing is counted twice.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from gearshift.store.rows import CALL_COLS, FACT_COLS, TRACE_COLS
from gearshift.store.view import PairEstimate, Totals

HOUR = 3600
BUCKET_RATIO = 1.02  # latency histogram: each bucket's upper edge 2% above its lower one
SMALLEST_MS = 0.001  # the first bucket's upper edge: a latency from a microsecond on is to 1%
_LOG_RATIO = math.log(BUCKET_RATIO)

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollup_totals (
    hour INTEGER NOT NULL,
    router TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    cache TEXT NOT NULL,
    status INTEGER NOT NULL,
    answered INTEGER NOT NULL,
    gated INTEGER NOT NULL,
    escalated INTEGER NOT NULL,
    final_model TEXT NOT NULL,
    pair_reference TEXT NOT NULL,
    n INTEGER NOT NULL,
    streamed INTEGER NOT NULL,
    cost_usd {real} NOT NULL,
    shadow_cost_usd {real} NOT NULL,
    estimated_calls {real} NOT NULL,
    cf_input_tokens {real} NOT NULL,
    cf_output_tokens {real} NOT NULL,
    verdicts_n {real} NOT NULL,
    verdicts_passed {real} NOT NULL,
    cache_saved_usd {real} NOT NULL,
    pair_n INTEGER NOT NULL,
    pair_passed INTEGER NOT NULL,
    pair_judged INTEGER NOT NULL,
    pair_disagreed INTEGER NOT NULL,
    pair_resolved INTEGER NOT NULL,
    pair_weak {real} NOT NULL,
    pair_ref_grade {real} NOT NULL,
    PRIMARY KEY (hour, router, endpoint, cache, status, answered, gated, escalated, final_model, pair_reference)
);
CREATE TABLE IF NOT EXISTS rollup_calls (
    hour INTEGER NOT NULL,
    model TEXT NOT NULL,
    role TEXT NOT NULL,
    n INTEGER NOT NULL,
    cost_usd {real} NOT NULL,
    PRIMARY KEY (hour, model, role)
);
CREATE TABLE IF NOT EXISTS rollup_latency (
    hour INTEGER NOT NULL,
    escalated INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (hour, escalated, bucket)
)
"""
TABLES = ("rollup_totals", "rollup_calls", "rollup_latency")

# The columns of a trace row the rollups read: by position in the row `rows.encode` made, or in this order
# from the stored row (SELECT ... by id) when a trace is written again.
COLS = ("id", "created", "router", "endpoint", "cache", "status", "answered", "gated", "escalated", "final_model",
        "streamed", "cost_usd", "shadow_cost_usd", "estimated_calls", "cf_input_tokens", "cf_output_tokens",
        "verdicts_n", "verdicts_passed", "cache_saved_usd", "latency_ms", "pair_reference", "pair_n", "pair_passed",
        "pair_judged", "pair_disagreed", "pair_resolved", "pair_weak", "pair_ref_grade")
GROUP = ("router", "endpoint", "cache", "status", "answered", "gated", "escalated", "final_model", "pair_reference")
TOTAL_SUMS = ("n", "streamed", "cost_usd", "shadow_cost_usd", "estimated_calls", "cf_input_tokens", "cf_output_tokens",
              "verdicts_n", "verdicts_passed", "cache_saved_usd")
PAIR_SUMS = ("pair_n", "pair_passed", "pair_judged", "pair_disagreed", "pair_resolved", "pair_weak", "pair_ref_grade")
SUMS = TOTAL_SUMS + PAIR_SUMS


class _Layout:
    """Where the rollups' columns are in a trace row, and (trace id, model, role, cost) in a call row."""

    def __init__(self, trace_cols: Sequence[str], call_cols: Sequence[str]) -> None:
        at = {c: i for i, c in enumerate(trace_cols)}
        self.id, self.created, self.latency = at["id"], at["created"], at["latency_ms"]
        self.answered, self.gated, self.escalated = at["answered"], at["gated"], at["escalated"]
        self.group = itemgetter(*[at[c] for c in GROUP])
        self.sums = itemgetter(*[at[c] for c in SUMS[1:]])
        self.call = [list(call_cols).index(c) for c in ("trace_id", "model", "role", "cost_usd")]


ENCODED = _Layout(TRACE_COLS + FACT_COLS, CALL_COLS)
STORED = _Layout(COLS, ("trace_id", "model", "role", "cost_usd"))


def _add_sql(table: str, key: Sequence[str], sums: Sequence[str]) -> str:
    cols = (*key, *sums)
    return (f"INSERT INTO {table} ({','.join(cols)}) VALUES ({','.join('?' * len(cols))}) ON CONFLICT "
            f"({','.join(key)}) DO UPDATE SET {', '.join(f'{s} = {table}.{s} + excluded.{s}' for s in sums)}")


ADD_TOTALS = _add_sql("rollup_totals", ("hour", *GROUP), SUMS)
ADD_CALLS = _add_sql("rollup_calls", ("hour", "model", "role"), ("n", "cost_usd"))
ADD_LATENCY = _add_sql("rollup_latency", ("hour", "escalated", "bucket"), ("n",))


def bucket(ms: float) -> int:
    """The latency histogram's bucket of a latency (0 holds everything under SMALLEST_MS)."""
    return int(math.log(ms / SMALLEST_MS) / _LOG_RATIO) + 1 if ms >= SMALLEST_MS else 0


def bucket_value(b: int) -> float:
    """The value a bucket stands for: the geometric middle of its edges (0 for the first)."""
    return 0.0 if b == 0 else SMALLEST_MS * BUCKET_RATIO ** (b - 0.5)


@dataclass
class Histogram:
    """Latencies as counts per bucket: what the overview's p50/p95 are read from."""

    counts: dict[int, int] = field(default_factory=dict)

    def add(self, b: int, n: int = 1) -> None:
        self.counts[b] = self.counts.get(b, 0) + n

    def __len__(self) -> int:
        return sum(self.counts.values())

    def percentile(self, q: float) -> float | None:
        """The q-th percentile as `np.percentile` takes it (between the values ranked next to q/100 * (n - 1)),
        each value the middle of its bucket: within 1% of the exact figure."""
        n = len(self)
        if not n:
            return None
        keys = sorted(self.counts)
        cum, total = [], 0
        for k in keys:
            total += self.counts[k]
            cum.append(total)
        rank = q / 100 * (n - 1)
        low, high = (bucket_value(keys[bisect_left(cum, math.floor(r) + 1)]) for r in (rank, math.ceil(rank)))
        return low + (rank - math.floor(rank)) * (high - low)


@dataclass
class Delta:
    """What some trace rows add to (sign 1) or take from (sign -1) the rollups, per hour and group."""

    totals: dict[tuple[Any, ...], list[float]] = field(default_factory=dict)
    calls: dict[tuple[Any, ...], list[float]] = field(default_factory=dict)
    latency: dict[tuple[int, int, int], int] = field(default_factory=dict)

    def add(self, trows: Iterable[Sequence[Any]], crows: Iterable[Sequence[Any]], sign: int = 1,
            layout: _Layout = STORED) -> None:
        """Add trace rows and their call rows (as `layout` places their columns)."""
        hours: dict[str, int] = {}
        groups: dict[tuple[int, tuple[Any, ...]], list[Sequence[Any]]] = {}
        latency = self.latency
        at_id, at_created, group = layout.id, layout.created, layout.group
        at_answered, at_gated, at_escalated, at_latency = layout.answered, layout.gated, layout.escalated, layout.latency
        for r in trows:
            hour = int(r[at_created] // HOUR)
            hours[r[at_id]] = hour
            key = (hour, group(r))
            found = groups.get(key)
            if found is None:
                groups[key] = [r]
            else:
                found.append(r)
            if r[at_answered] and (r[at_gated] or r[at_escalated]):  # the overview's latency cohorts
                lk = (hour, int(r[at_escalated]), bucket(r[at_latency]))
                latency[lk] = latency.get(lk, 0) + sign
        totals = self.totals
        for (hour, g), part in groups.items():
            sums = [sign * len(part), *(sign * sum(c) for c in zip(*map(layout.sums, part), strict=True))]
            key = (hour, *g)
            have = totals.get(key)
            totals[key] = sums if have is None else [a + b for a, b in zip(have, sums, strict=True)]
        out = self.calls
        i_id, i_model, i_role, i_cost = layout.call
        for c in crows:
            ck = (hours[c[i_id]], c[i_model], c[i_role])
            have = out.get(ck)
            if have is None:
                out[ck] = [sign, sign * c[i_cost]]
            else:
                have[0] += sign
                have[1] += sign * c[i_cost]

    def statements(self) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """The UPSERTs that add this delta, one statement per table with its rows."""
        # A NULL cache, final model or pair reference is '' here: a key column, compared by the UPSERT's conflict target.
        out = [(ADD_TOTALS, [(*k[:3], k[3] or "", *k[4:8], k[8] or "", k[9] or "", *v) for k, v in self.totals.items()]),
               (ADD_CALLS, [(*k, *v) for k, v in self.calls.items()]),
               (ADD_LATENCY, [(*k, v) for k, v in self.latency.items() if v])]
        # In key order: writers sharing a PostgreSQL store then lock the rows they add to in one order (no deadlock).
        return [(sql, sorted(values)) for sql, values in out if values]


def rolled_part(group: Sequence[Any], sums: Sequence[Any], reference: str | None) -> Totals:
    """The Totals of one row of rollup_totals against `reference`, its pairs counted when they are served
    (the SQL's SERVED: answered and routed, and the final model is not the pair's reference, else `reference`)."""
    router, answered, final_model, pair_reference = group[0], group[4], group[7], group[8]
    part = part_of(group, sums, reference is not None and final_model == reference)
    if answered and router and final_model and final_model != (pair_reference or reference or ""):
        n, agreed, judged, disagreed, resolved, weak, ref = sums[len(TOTAL_SUMS):]
        part.served = PairEstimate(int(n), int(agreed), int(judged), int(disagreed), int(resolved), float(weak),
                                   float(ref))
    return part


def of_encoded(trows: Sequence[Sequence[Any]], crows: Sequence[Sequence[Any]]) -> Delta:
    """What rows as `rows.encode` made them add: the facts it computed, read by position, never again."""
    d = Delta()
    d.add(trows, crows, 1, ENCODED)
    return d


def part_of(group: Sequence[Any], sums: Sequence[Any], strong: bool) -> Totals:
    """The Totals of one group of traces (GROUP's first seven values, TOTAL_SUMS' sums) as `Totals.add` counts
    each of them (the served pairs apart)."""
    router, endpoint, cache, status, answered, gated, escalated = group[:7]
    n, streamed, cost, shadow, estimated, cf_in, cf_out, verdicts, passed, saved = sums[:len(TOTAL_SUMS)]
    n = int(n)
    part = Totals(requests=n, errors=n if status != 200 else 0, streamed=int(streamed), spend_usd=float(cost),
                  estimated_calls=int(estimated), by_router={router or "(rejected)": n}, by_endpoint={endpoint: n})
    if cache is not None and cache != "":
        part.by_cache = {cache: n}
        part.cache_saved_usd = float(saved) if cache == "hit" else 0.0
    if router:
        part.routed, part.failed = n, n if status >= 500 else 0
        if answered:
            part.answered, part.answered_spend_usd, part.answered_shadow_usd = n, float(cost), float(shadow)
            part.cf_input_tokens, part.cf_output_tokens = int(cf_in), int(cf_out)
            part.gated, part.escalated = n * gated, n * escalated
            part.gated_escalated, part.tier1 = n * gated * escalated, n * gated * (1 - escalated)
            part.verdicts, part.verdicts_passed, part.strong = int(verdicts), int(passed), n * strong
    return part


@dataclass
class RangeSums:
    """What the overview reads over a time range: Totals per chart bucket (its start, in order), the
    latencies of the tier-1 and escalated cohorts (a list, or a histogram when read from rollups),
    and (model, role, calls, USD) of the range's calls."""

    buckets: list[tuple[float, Totals]]
    tier1: list[float] | Histogram
    escalated: list[float] | Histogram
    calls: list[tuple[str, str, int, float]]


__all__ = ["BUCKET_RATIO", "COLS", "Delta", "Histogram", "RangeSums", "SCHEMA", "TABLES", "bucket", "bucket_value",
           "of_encoded", "part_of"]
