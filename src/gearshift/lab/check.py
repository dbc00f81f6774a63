"""`gearshift lab check`: should this traffic be routed at all? Five questions, answered with numbers.

The field's practice before routing (RouteLLM, RouterBench, and what teams report running routers):
1. baseline: is there a measured quality baseline for always-expensive (always-strongest)?
2. shadow: are there shadow pairs (the same request answered by the cheap and the reference
   model), and how many?
3. measurable: does a verdict exist for this traffic (gates, shadow agreement, feedback)?
4. volume: is traffic above ~100K tokens a day? Below it, the work of routing (shadowing,
   judging, training, watching) may cost more than it saves.
5. savings: what does the best calibrated router save at the quality floor, held out?
   Each candidate's threshold is calibrated on one random half (QualityFloor, fixed-sequence
   bootstrap test); the best is picked by its calibration-half cost; its savings, quality
   retained and whether the floor held are measured on the other half, with intervals.

Each answer is yes / no / unknown with the evidence. Sources: an outcomes table (benchmark or file:
volume cannot be known) or a trace store (traces and feedback).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gearshift.lab import metrics
from gearshift.lab.baselines import LengthRouter
from gearshift.lab.bootstrap import Estimate, bootstrap
from gearshift.lab.calibrate import Calibration, QualityFloor, calibrate_scores, split_halves
from gearshift.lab.evaluate import complete, default_pair
from gearshift.lab.replay import router_scores
from gearshift.outcomes.datasets import from_traces
from gearshift.outcomes.table import Outcomes
from gearshift.routers.base import Router, ScoringRouter
from gearshift.routers.random import RandomOptions, RandomRouter
from gearshift.store.view import SHADOW_GATE, TraceView

MIN_VOLUME_TOKENS_PER_DAY = 100_000
MIN_BASELINE = 30  # graded always-strongest answers for a baseline with a usable interval
MIN_GRADED = 100  # graded requests for quality to count as measured (interval about +-10 points)
MIN_PAIRS = 100  # graded pairs to calibrate on one half and test on the other
MIN_CERTIFY = 500  # calibration prompts below which "no cheaper point passed" means "not enough evidence"
MIN_SPAN_SECONDS = 3600.0  # shorter trace spans are not extrapolated to a day

QUESTIONS = {
    "baseline": "Is there a quality baseline for always-expensive?",
    "shadow": "Is shadow data available, and how much?",
    "measurable": "Are quality criteria measurable for this traffic?",
    "volume": f"Is volume above {MIN_VOLUME_TOKENS_PER_DAY // 1000}K tokens/day?",
    "savings": "What would the best calibrated router save at the quality floor?",
}

Progress = Callable[[str, int, int], None]


@dataclass
class Answer:
    key: str
    answer: str  # "yes" | "no" | "unknown"
    evidence: str
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        return QUESTIONS[self.key]


@dataclass
class CheckResult:
    source: str
    floor: float
    answers: list[Answer]

    def answer(self, key: str) -> Answer:
        return next(a for a in self.answers if a.key == key)

    def recommendation(self) -> str:
        """One line that follows from the answers."""
        by = {a.key: a.answer for a in self.answers}
        if by.get("savings") == "no":
            return f"do not route yet: no calibrated router kept {self.floor:.0%} of always-strongest quality with savings"
        gaps = [k for k in ("baseline", "shadow", "measurable", "volume") if by.get(k) == "no"]
        if by.get("savings") == "yes" and not gaps:
            unknown = [k for k, v in by.items() if v == "unknown"]
            return "routing is supported by the evidence" + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        if gaps:
            return "fix first: " + ", ".join(gaps)
        return "not enough evidence yet: " + ", ".join(k for k, v in by.items() if v == "unknown")

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "floor": self.floor, "recommendation": self.recommendation(),
                "answers": [{"key": a.key, "question": a.question, "answer": a.answer, "evidence": a.evidence,
                             "figures": _jsonable(a.figures)} for a in self.answers]}


def _jsonable(x: Any) -> Any:
    if isinstance(x, Estimate):
        return {"value": _num(x.value), "low": _num(x.low), "high": _num(x.high)}
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float):
        return _num(x)
    return x


def _num(v: float) -> float | None:
    return None if v != v else float(v)


def mean_estimate(values: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> Estimate:
    """Mean of per-request values with its bootstrap interval."""
    v = np.asarray(values, float)
    return bootstrap(v, lambda d, w: w @ d / len(d), n=n_boot, seed=seed, alpha=alpha, weighted=True)  # type: ignore[return-value]


# --- outcomes ------------------------------------------------------------------------------------------


def _candidates(weak: str, strong: str, routers: Sequence[Router], columns: Mapping[str, str]) -> list[ScoringRouter]:
    """The routers to calibrate: random and the length heuristic, plus configured scoring routers on the pair."""
    out: list[ScoringRouter] = [RandomRouter("random", RandomOptions(weights={weak: 1.0, strong: 1.0})),
                                LengthRouter("length", weak, strong)]
    for r in routers:
        if isinstance(r, ScoringRouter) and getattr(r, "weak", None) and getattr(r, "strong", None) \
                and (columns.get(r.weak, r.weak), columns.get(r.strong, r.strong)) == (weak, strong):
            out.append(r)
    return out


def best_calibrated(o: Outcomes, weak: str, strong: str, floor: float, routers: Sequence[Router] = (), *,
                    columns: Mapping[str, str] | None = None, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                    progress: Progress | None = None) -> Answer:
    """Question 5: calibrate every candidate on one half, pick by calibration cost, report the other half."""
    o = complete(o, [weak, strong])
    if len(o) < MIN_PAIRS:
        return Answer("savings", "unknown", f"only {len(o)} prompts graded for both {weak} and {strong}; "
                      f"calibrating on one half and testing on the other needs at least {MIN_PAIRS}",
                      {"pairs": len(o)})
    cal, test = split_halves(o, seed=seed)
    cands = _candidates(weak, strong, routers, dict(columns or {}))
    results: list[tuple[ScoringRouter, Calibration, np.ndarray]] = []
    for i, r in enumerate(cands):
        if progress:
            progress("calibrate", i, len(cands))
        sc, ts = router_scores(r, cal), router_scores(r, test)
        c = calibrate_scores(sc, cal, weak, strong, QualityFloor(floor), test_scores=ts, test=test, alpha=alpha,
                             n_boot=n_boot, seed=seed)
        results.append((r, c, ts))
    if progress:
        progress("calibrate", len(cands), len(cands))
    # Chosen on the calibration half only, so the test half stays an honest measurement.
    router, calib, test_scores = min(results, key=lambda t: t[1].calibration.cost)
    w, s = test.index(weak), test.index(strong)
    to_strong = test_scores >= calib.threshold
    qr = np.where(to_strong, test.quality[:, s], test.quality[:, w]).astype(float)
    cr = np.where(to_strong, test.cost[:, s], test.cost[:, w]).astype(float)
    table = np.stack([qr, cr, test.quality[:, s].astype(float), test.cost[:, s].astype(float)], axis=1)

    def stat(d: np.ndarray, wts: np.ndarray) -> dict[str, np.ndarray]:
        m = np.asarray(wts, float) @ d
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"savings": 1 - m[:, 1] / m[:, 3], "retained": m[:, 0] / m[:, 2]}

    est: dict[str, Estimate] = bootstrap(table, stat, n=n_boot, seed=seed, alpha=alpha, weighted=True)  # type: ignore[assignment]
    sav, ret = est["savings"], est["retained"]
    others = {r.name: {"calibration_cost": c.calibration.cost, "threshold": c.threshold,
                       "test_retained": c.retained_test, "test_savings": float(metrics.savings(c.test.cost, np.mean(test.cost[:, s]))) if c.test else None,
                       "held": c.held} for r, c, _ in results}
    held = bool(calib.held)
    share = calib.test.strong_share if calib.test else float("nan")
    if held and sav.value > 0 and sav.low > 0:
        verdict = "yes"
    elif calib.calibration.strong_share >= 1.0 and len(cal) < MIN_CERTIFY:
        # No cheaper point passed the floor test: with few pairs that is a lack of evidence, not of savings.
        verdict = "unknown"
    else:
        verdict = "no"
    ev = (f"{router.name}: on the held-out half ({len(test)} prompts) saves {sav.format('.1f', 100, '%')} vs always-"
          f"{strong}, keeps {ret.format('.1f', 100, '%')} of its quality (floor {floor:.0%} "
          f"{'held' if held else 'MISSED'}), {share:.0%} strong calls; threshold {calib.threshold:.4g} chosen on the "
          f"other half (lower bound of retained {calib.bound:.1%} at {calib.confidence:.0%} confidence). "
          f"Candidates: {', '.join(others)}"
          + (f". No cheaper point passed the floor test on {len(cal)} calibration prompts; more pairs may show "
             f"savings (at least {MIN_CERTIFY} per half advised)" if verdict == "unknown" else "")
          + (". Retained is a lower bound: disagreements with the reference count as losses, none resolved "
             "(shadow.resolve)" if o.pair_estimate is not None and o.pair_estimate.lower_bound else ""))
    return Answer("savings", verdict, ev, {"router": router.name, "savings": sav, "quality_retained": ret,
                                           "held": held, "strong_share": share, "threshold": calib.threshold,
                                           "calibration_bound": calib.bound, "test_prompts": len(test),
                                           "calibration_prompts": len(cal), "candidates": others})


def check_outcomes(outcomes: Outcomes, floor: float = 0.95, routers: Sequence[Router] = (), *,
                   weak: str | None = None, strong: str | None = None, columns: Mapping[str, str] | None = None,
                   n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, progress: Progress | None = None) -> CheckResult:
    """The decision check on an outcomes table (a benchmark or a file)."""
    if weak is None or strong is None:
        dw, ds = default_pair(outcomes)
        weak, strong = weak or dw, strong or ds
    n = len(outcomes)
    s = outcomes.index(strong)
    qs = np.asarray(outcomes.quality[:, s], float)
    graded = ~np.isnan(qs)
    answers = []
    if graded.sum() >= MIN_BASELINE:
        base = mean_estimate(qs[graded], n_boot, seed, alpha)
        answers.append(Answer("baseline", "yes", f"always-{strong}: quality {base} over {int(graded.sum())} graded "
                              f"prompts (of {n})", {"model": strong, "quality": base, "graded": int(graded.sum())}))
    else:
        answers.append(Answer("baseline", "no", f"only {int(graded.sum())} prompts graded for {strong} "
                              f"(need {MIN_BASELINE})", {"model": strong, "graded": int(graded.sum())}))
    pairs = len(complete(outcomes, [weak, strong]))
    answers.append(Answer("shadow", "yes" if pairs else "no",
                          f"{pairs} prompts ({pairs / n:.0%}) answered and graded for both {weak} and {strong}: recorded "
                          f"outcomes, which stand in for shadow pairs (no live traffic)",
                          {"pairs": pairs, "share": pairs / n if n else 0.0, "kind": "outcomes"}))
    any_graded = int((~np.isnan(outcomes.quality)).any(axis=1).sum())
    answers.append(Answer("measurable", "yes" if any_graded >= MIN_GRADED else "no",
                          f"{any_graded} of {n} prompts ({any_graded / n:.0%}) carry a quality verdict "
                          f"(benchmark grading)", {"graded": any_graded, "share": any_graded / n if n else 0.0}))
    answers.append(Answer("volume", "unknown", "outcomes carry no timestamps or traffic volume; run the check on "
                          "traces (--config) to measure tokens per day", {}))
    answers.append(best_calibrated(outcomes, weak, strong, floor, routers, columns=columns, n_boot=n_boot,
                                   seed=seed, alpha=alpha, progress=progress))
    return CheckResult(outcomes.name, floor, answers)


# --- traces ----------------------------------------------------------------------------------------------


def token_volume(traces: Iterable[Mapping[str, Any] | TraceView]) -> dict[str, Any]:
    """Tokens of the calls that served clients (primary, escalation, fallback) per day of the span."""
    views = [TraceView.of(t) for t in traces]
    tokens = sum(t.answer_tokens for t in views)
    created = [float(t.created) for t in views if t.created is not None]
    span = (max(created) - min(created)) if len(created) >= 2 else 0.0
    return {"tokens": tokens, "tokens_all_roles": sum(c.tokens for t in views for c in t.calls), "span_seconds": span,
            "tokens_per_day": tokens / (span / 86400.0) if span > 0 else None,
            "estimated_calls": sum(c.usage_estimated for t in views for c in t.calls)}


def _feedback(traces: Sequence[TraceView], feedback: Iterable[Mapping[str, Any]]) -> dict[Any, list[float]]:
    """Feedback scores by trace id, for the traces at hand."""
    ids = {t.id for t in traces}
    out: dict[Any, list[float]] = {}
    for f in feedback:
        if f.get("trace_id") in ids and isinstance(f.get("score"), int | float):
            out.setdefault(f["trace_id"], []).append(float(f["score"]))
    return out


def _baseline(traces: Sequence[TraceView], fb: Mapping[Any, list[float]], reference: str | None,
              n_boot: int, seed: int, alpha: float) -> Answer:
    """Question 1: independent grades of the reference's own answers (gates, feedback); a shadow
    pair's reference is right by definition, so it cannot be its own baseline."""
    if reference is None:
        return Answer("baseline", "unknown", "no reference model: give --strong or record shadow pairs", {})
    scores: list[float] = []
    for t in traces:  # in trace order: the bootstrap resamples by position
        scores += [g for v in t.gate_verdicts if v.model == reference and (g := v.grade) is not None]
        scores += fb.get(t.id, []) if t.final_model == reference else []
    if len(scores) >= MIN_BASELINE:
        base = mean_estimate(np.array(scores), n_boot, seed, alpha)
        return Answer("baseline", "yes", f"always-{reference}: quality {base} from {len(scores)} graded answers of it "
                      f"(gates, feedback)", {"model": reference, "quality": base, "graded": len(scores)})
    return Answer("baseline", "no", f"{len(scores)} answers of {reference} carry an independent grade (gates, "
                  f"feedback; need {MIN_BASELINE}); shadow pairs measure the cheaper model against it, not it",
                  {"model": reference, "graded": len(scores)})


def _shadow(traces: Sequence[TraceView], pairs: Outcomes | None, reference: str | None) -> Answer:
    """Question 2: how many requests were shadowed, and how many pairs are graded against the reference."""
    n = len(traces)
    shadowed = sum(t.shadow_answered for t in traces)
    graded = 0
    if pairs is not None and reference in pairs.models:
        q = pairs.quality
        others = [j for j, m in enumerate(pairs.models) if m != reference]
        ref_ok = ~np.isnan(q[:, pairs.index(reference)])
        graded = int((ref_ok & (~np.isnan(q[:, others])).any(axis=1)).sum()) if others else 0
    est = pairs.pair_estimate if pairs is not None else None
    how = f"; {est.line()}" if est is not None and est.pairs else ""
    return Answer("shadow", "yes" if shadowed else "no",
                  f"{shadowed} of {n} requests shadowed ({shadowed / n:.1%} of traffic); {graded} pairs graded "
                  f"against {reference}{how}" if n else "no traces",
                  {"shadowed": shadowed, "requests": n, "share": shadowed / n if n else 0.0, "graded_pairs": graded,
                   "lower_bound": bool(est is not None and est.lower_bound)})


def _measurable(traces: Sequence[TraceView], fb: Mapping[Any, list[float]]) -> Answer:
    """Question 3: a verdict of any kind on the request (a graded gate, a shadow comparison, feedback)."""
    n = len(traces)
    kinds = {"gates": 0, "shadow agreement": 0, "feedback": 0}
    graded = 0
    for t in traces:
        vs = [v for v in t.verdicts if v.grade is not None]
        has = (any(not v.shadow for v in vs), any(v.gate == SHADOW_GATE for v in vs), t.id in fb)
        for kind, yes in zip(kinds, has, strict=True):
            kinds[kind] += yes
        graded += any(has)
    return Answer("measurable", "yes" if graded >= MIN_GRADED else "no",
                  f"{graded} of {n} requests ({graded / n if n else 0:.1%}) have a verdict: "
                  + ", ".join(f"{k} {v}" for k, v in kinds.items()) + ("" if graded >= MIN_GRADED else
                                                                       f" (need {MIN_GRADED})"),
                  {"graded": graded, "requests": n, "share": graded / n if n else 0.0, **kinds})


def _volume(traces: Sequence[TraceView]) -> Answer:
    """Question 4: client tokens per day, when the span is long enough to extrapolate."""
    vol = token_volume(traces)
    if vol["tokens_per_day"] is None or vol["span_seconds"] < MIN_SPAN_SECONDS:
        return Answer("volume", "unknown", f"{vol['tokens']:,} tokens over {vol['span_seconds'] / 3600:.2f} h: too "
                      f"short a span to extrapolate to a day (need {MIN_SPAN_SECONDS / 3600:.0f} h)", vol)
    per_day = vol["tokens_per_day"]
    days = vol["span_seconds"] / 86400
    how = f"over {days:.1f} days" if days >= 1 else f"extrapolated from {days * 24:.1f} h"
    return Answer("volume", "yes" if per_day >= MIN_VOLUME_TOKENS_PER_DAY else "no",
                  f"{per_day:,.0f} tokens/day ({vol['tokens']:,} tokens of client calls {how})"
                  + ("" if per_day >= MIN_VOLUME_TOKENS_PER_DAY else
                     "; below 100K/day the cost of routing may exceed its savings"), vol)


def _most_paired(pairs: Outcomes, reference: str) -> str:
    """The cheaper model with the most prompts graded for both it and the reference."""
    r = pairs.index(reference)
    counts = {m: int((~np.isnan(pairs.quality[:, [pairs.index(m), r]])).all(1).sum())
              for m in pairs.models if m != reference}
    return max(counts, key=lambda m: counts[m])


def check_traces(traces: Iterable[Mapping[str, Any] | TraceView], feedback: Sequence[Mapping[str, Any]] = (), *,
                 reference: str | None = None, floor: float = 0.95, routers: Sequence[Router] = (),
                 weak: str | None = None, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 source: str = "traces", progress: Progress | None = None) -> CheckResult:
    """The decision check on stored traces (dicts as TraceStore.traces() yields them, or views) and feedback.

    reference: the always-expensive model (default: the best model of the shadow pairs).
    """
    views = [TraceView.of(t) for t in traces]
    fb = _feedback(views, feedback)
    try:
        pairs: Outcomes | None = from_traces(views, min_models=2, name=source)
    except ValueError:
        pairs = None
    if reference is None and pairs is not None:
        reference = metrics.strongest(pairs)
    answers = [_baseline(views, fb, reference, n_boot, seed, alpha), _shadow(views, pairs, reference),
               _measurable(views, fb), _volume(views)]
    if pairs is None or reference is None or reference not in pairs.models:
        answers.append(Answer("savings", "unknown", "no graded pairs with the reference model to calibrate on", {}))
    else:
        answers.append(best_calibrated(pairs, weak or _most_paired(pairs, reference), reference, floor, routers,
                                       n_boot=n_boot, seed=seed, alpha=alpha, progress=progress))
    return CheckResult(source, floor, answers)


def print_check(result: CheckResult, console: Any = None) -> None:
    """The answers as a rich table."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    colour = {"yes": "green", "no": "red", "unknown": "yellow"}
    table = Table(title=f"decision check: {result.source}, quality floor {result.floor:.0%} of always-strongest",
                  title_justify="left", show_lines=True)
    table.add_column("question", max_width=28)
    table.add_column("answer")
    table.add_column("evidence")
    for a in result.answers:
        table.add_row(a.question, f"[{colour[a.answer]}]{a.answer}[/]", a.evidence)
    console.print(table)
    console.print(f"[bold]{result.recommendation()}[/]")


__all__ = ["Answer", "CheckResult", "QUESTIONS", "best_calibrated", "check_outcomes", "check_traces", "mean_estimate",
           "print_check", "token_volume"]
