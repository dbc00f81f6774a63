"""Window statistics over trace dicts: the figures the watch compares with a baseline.

Every figure is defined once here, so a baseline computed from a reference window and the live
window agree on what they measure:

- escalation rate: among *gated* answered requests (a gate/judge call or a non-shadow verdict), the
  share that made an `escalation` call.
- gate pass rate: the share of gate verdicts that passed (shadow verdicts excluded).

What a single trace means (serving or shadow calls, gated, escalated, its shadow pair, what it cost)
is read once, by gearshift.store.view.TraceView; this module only counts.
- strong share: the share of answered requests whose final model is the reference model.
- error rate: the share of routed requests (router set) that ended in a 5xx status.
- shadow agreement: among shadow pairs that judged the *served* answer (the verdict's model is the
  final model, which is not the reference), the share whose `shadow_agreement` verdict passed.
  Exploration pairs (the client got the reference's answer and a cheaper model was tried in the
  background) say nothing about served quality and are left out.
- quality retained: `1 - (1 - r) x (1 - strong share)`, where r is the served pairs' estimate of the
  cheaper answers' quality relative to the reference (store.view.PairEstimate): requests the
  reference answered keep their quality; cheaper answers keep r of it. r is the agreement rate when
  no disagreement was resolved, and then quality retained is a lower bound (`quality_lower_bound`);
  with disagreements resolved by a judge (`shadow.resolve`), r counts them at their resolved grades.
  The interval is the estimate's (Wilson's, carried through that formula; the strong share is
  observed on every request, so its own noise is small next to the pairs' and is ignored).
- spend ratio: serving spend (every call but shadow calls) over the always-reference counterfactual
  (`TraceView.counterfactual_cost`), on answered requests. An estimate.
- latency p50/p95 of answered requests, ms.
- prompt tokens (`estimated_tokens`) and router scores: raw values, for PSI against the baseline.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gearshift.config import Config
from gearshift.store.base import TraceStore
from gearshift.store.view import PairEstimate, Totals, TraceView, wilson
from gearshift.trace import Trace


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


@dataclass(slots=True)
class WindowStats:
    """Counts and raw values of a set of traces; rates are derived properties."""

    n: int = 0
    routed: int = 0
    answered: int = 0
    errors: int = 0
    gated: int = 0
    escalated: int = 0
    verdicts: int = 0
    verdicts_passed: int = 0
    strong: int = 0
    pairs: int = 0
    agreements: int = 0
    estimate: PairEstimate = field(default_factory=PairEstimate)  # of the served pairs
    spend_usd: float = 0.0
    shadow_spend_usd: float = 0.0
    counterfactual_usd: float | None = None
    start: float | None = None
    end: float | None = None
    reference: str | None = None
    latency_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    prompt_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def escalation_rate(self) -> float | None:
        return _ratio(self.escalated, self.gated)

    @property
    def gate_pass_rate(self) -> float | None:
        return _ratio(self.verdicts_passed, self.verdicts)

    @property
    def strong_share(self) -> float | None:
        return _ratio(self.strong, self.answered) if self.reference else None

    @property
    def error_rate(self) -> float | None:
        return _ratio(self.errors, self.routed)

    @property
    def shadow_agreement(self) -> float | None:
        return _ratio(self.agreements, self.pairs)

    @property
    def spend_ratio(self) -> float | None:
        return _ratio(self.spend_usd, self.counterfactual_usd or 0.0)

    def latency(self, q: float) -> float | None:
        return float(np.percentile(self.latency_ms, q)) if self.latency_ms.size else None

    def quality_retained(self, confidence: float = 0.95) -> tuple[float, float, float] | None:
        """(estimate, lower, upper) of quality retained vs always-reference, or None without pairs."""
        r, bounds = self.estimate.retained, self.estimate.interval(confidence)
        if r is None or bounds is None:
            return None
        cheap = 1.0 - (self.strong_share or 0.0)
        lo, hi = bounds
        return 1 - (1 - r) * cheap, 1 - (1 - lo) * cheap, 1 - (1 - hi) * cheap

    @property
    def quality_lower_bound(self) -> bool:
        """Quality retained counts every disagreement as a loss (none resolved): a lower bound."""
        return self.estimate.lower_bound


def _reference(config: Config | None, reference: str | None) -> str | None:
    if reference is not None:
        return reference
    if config is None:
        return None
    return config.watch.reference or config.strongest()


def compute_stats(traces: Iterable[Mapping[str, Any] | Trace | TraceView], config: Config | None = None,
                  reference: str | None = None) -> WindowStats:
    """The window figures of `traces` (store dicts, Trace objects or views). Without `config` there are
    no prices, so the spend ratio is None; without a reference model, the strong share is None."""
    ref = _reference(config, reference)
    totals = Totals()
    latency: list[float] = []
    tokens: list[float] = []
    scores: list[float] = []
    for t in map(TraceView.of, traces):
        totals.add(t, ref)
        if not t.routed:
            continue  # rejected before routing (auth, bad body): no route to judge
        tokens.append(float(t.estimated_tokens))
        if t.score is not None:
            scores.append(t.score)
        if t.answered:
            latency.append(t.latency_ms)
    s = stats_of(totals, config, ref)
    s.latency_ms = np.asarray(latency, dtype=float)
    s.prompt_tokens = np.asarray(tokens, dtype=float)
    s.scores = np.asarray(scores, dtype=float)
    return s


def stats_of(totals: Totals, config: Config | None, reference: str | None) -> WindowStats:
    """The window's counts from traces' Totals counted against `reference` (compute_stats, or the store's
    SQL sums); the raw values (latency, tokens, scores) are left empty for the caller to fill."""
    price = config.models[reference].price if config is not None and reference is not None \
        and reference in config.models else None
    return WindowStats(
        n=totals.requests, routed=totals.routed, answered=totals.answered, errors=totals.failed, gated=totals.gated,
        escalated=totals.gated_escalated, verdicts=totals.verdicts, verdicts_passed=totals.verdicts_passed,
        strong=totals.strong, pairs=totals.served.pairs, agreements=totals.served.passed, estimate=totals.served,
        spend_usd=totals.answered_spend_usd, shadow_spend_usd=totals.answered_shadow_usd,
        counterfactual_usd=None if price is None else totals.counterfactual_cost(price),
        start=totals.start, end=totals.end, reference=reference)


def recent_traces(store: TraceStore, requests: int, seconds: float | None = None, router: str | None = None,
                  now: float | None = None) -> list[dict[str, Any]]:
    """The most recent `requests` traces (and, with `seconds`, only those that young), oldest first.

    Without `seconds` the store reads the newest `requests` by index (find_traces); with it, every trace
    that young. Each call re-reads the whole window: traces written late (the writer batches) or
    rewritten (shadow verdicts) are never missed.
    """
    if seconds is not None:
        now = time.time() if now is None else now
        return list(store.traces(since=now - seconds, router=router))[-requests:]
    return store.find_traces(router=router, limit=requests)[::-1]


__all__ = ["WindowStats", "compute_stats", "recent_traces", "stats_of", "wilson"]
