"""GSM8K cascades (Mixtral -> GPT-4) against RouteLLM's best published router.

Protocol: RouteLLM's GSM8K responses with its contaminated prompts dropped (1,307 prompts). The
learned gate is trained by 5-fold cross-validation: on four folds (features of the question and of
Mixtral's recorded answer; label = GPT-4 right where Mixtral is wrong, i.e. escalating helps) and
run, as the real gate, on the fifth fold's recorded answers; the five held-out folds make one curve
over all prompts, swept over the gate's threshold. The programmatic gates (arithmetic +
final_answer) need no training: a fixed operating point and a sweep over their lowest score.

A cascade's cost counts Mixtral's call on every request, the gates, and GPT-4's call when escalated
(tokens estimated from text, characters / 4, as the lab does; gpt-4-1106 $10/$30, Mixtral $0.6/$0.6
per 1M input/output tokens; the stored prompts lack RouteLLM's 8 worked examples, so real input
costs were higher). Its strong share is its escalation rate. APGR and CPT come from
gearshift.lab.metrics; intervals are 95% bootstrap percentile intervals over prompts (the same
resamples for every row).

    GEARSHIFT_DATA=../shared/datasets python benchmarks/cascade_gsm8k.py [--resamples 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gearshift.gates import build_gate
from gearshift.gates.learned import LearnedGate, LearnedOptions
from gearshift.lab import metrics
from gearshift.lab.bootstrap import Estimate, bootstrap_curve, resample_matrix
from gearshift.lab.gating import answer_checks, cascade_outcomes, gate_scores, train_learned_gate
from gearshift.lab.replay import Curve, ScoreOrder, requests
from gearshift.lab.report import cheapest_reaching
from gearshift.outcomes.datasets import ROUTELLM_STRONG as STRONG
from gearshift.outcomes.datasets import ROUTELLM_WEAK as WEAK
from gearshift.outcomes.datasets import load
from gearshift.outcomes.table import Outcomes

# RouteLLM (arXiv 2406.18665), GSM8K, best router (causal LLM, judge-augmented).
ROUTELLM = {"apgr": 0.622, "cpt50": 0.336, "cpt80": 0.633}
FOLDS = 5


def folds(n: int, k: int = FOLDS, seed: int = 0) -> list[np.ndarray]:
    """k disjoint held-out index sets covering 0..n-1, shuffled once."""
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def cross_validated_gate(o: Outcomes, checks: np.ndarray, fold_seed: int = 0,
                         **train: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """Escalation scores of every prompt from a gate trained on the other folds, run as the real gate.
    Returns (escalation scores, gate seconds per prompt, training seconds)."""
    esc, secs = np.empty(len(o)), np.empty(len(o))
    t_train = 0.0
    for held in folds(len(o), seed=fold_seed):
        rows = np.setdiff1d(np.arange(len(o)), held)
        t0 = time.perf_counter()
        model = train_learned_gate(o, WEAK, STRONG, rows=rows, checks=checks, **train)
        t_train += time.perf_counter() - t0
        gate = LearnedGate(LearnedOptions(kind="learned", artifact="<cross-validation fold>"), model=model)
        gs = gate_scores([gate], o.subset(held), WEAK)
        esc[held], secs[held] = gs.escalation_scores(), gs.seconds
    return esc, secs, t_train


def question_only_scores(o: Outcomes) -> np.ndarray:
    """A question-only classifier (what a router sees: no cheap answer), cross-validated the same way."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from gearshift.lab.gating import gate_labels
    from gearshift.learned.features import FeatureSpec, Featurizer

    reqs = requests(o)
    y = gate_labels(o, WEAK, STRONG, "gain")
    out = np.empty(len(o))
    for held in folds(len(o)):
        rows = np.setdiff1d(np.arange(len(o)), held)
        fz = Featurizer(FeatureSpec(word_bits=14, char_bits=14)).fit([reqs[i] for i in rows])
        X = sp.csr_matrix(fz.transform(reqs), shape=(len(reqs), fz.dim))
        with threadpool_limits(1):
            clf = LogisticRegression(C=1.0, max_iter=5000).fit(X[rows], y[rows])
        out[held] = clf.predict_proba(X[held])[:, 1]
    return out


def cost_at_pgr(curve: Curve, x: float) -> np.ndarray | float:
    """Mean cost per request at the cheapest point reaching PGR x (per resample for a batch)."""
    target = curve.q_weak + x * (curve.q_strong - curve.q_weak)
    return cheapest_reaching(curve.strong_share, curve.quality, curve.cost, target)[0]


STATS: dict[str, Callable[[Curve], Any]] = {
    "apgr": metrics.apgr,
    "cpt50": lambda c: metrics.cpt(c, 0.5),
    "cpt80": lambda c: metrics.cpt(c, 0.8),
    "cost80_per_1k": lambda c: np.asarray(cost_at_pgr(c, 0.8)) * 1000,
}


def evaluate(name: str, scores: np.ndarray, table: Outcomes, counts: np.ndarray) -> dict[str, Any]:
    est = bootstrap_curve(scores, table, WEAK, STRONG, STATS, counts=counts)
    curve = ScoreOrder.from_scores(scores).curve(table, WEAK, STRONG, label=name)
    return {"name": name, **est, "curve": curve}


def fmt(e: Estimate | float | None, pct: bool = False, money: bool = False) -> str:
    if e is None:
        return "-"
    if isinstance(e, Estimate):
        if pct:
            return e.format(".1f", 100, "%")
        return e.format(".2f") if money else e.format(".3f")
    return f"{e * 100:.1f}%" if pct else (f"{e:.2f}" if money else f"{e:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--fold-seeds", type=int, default=5,
                    help="also re-draw the folds this many times and report the learned gate's spread")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    t_start = time.perf_counter()

    o = load("routellm/gsm8k", drop_contaminated=True)
    n = len(o)
    counts = resample_matrix(n, args.resamples, seed=0)
    qw, qs = o.quality[:, 0], o.quality[:, 1]
    cw, cs = o.cost[:, 0], o.cost[:, 1]

    # --- gates ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    checks = answer_checks(o, WEAK)
    t_checks = time.perf_counter() - t0
    learned, learned_secs, t_train = cross_validated_gate(o, checks, target="gain")
    wrong, _, _ = cross_validated_gate(o, checks, target="wrong")
    answer_only, _, _ = cross_validated_gate(o, checks, target="gain", question=None, answer_bits=0)
    prog_gates = [build_gate(g) for g in ({"kind": "arithmetic"}, {"kind": "final_answer"})]
    prog = gate_scores(prog_gates, o, WEAK)
    prog_esc = prog.escalation_scores()
    prog_fixed = ~prog.all_passed
    # Programmatic gates fixed, the learned one swept: one cascade with all three gates.
    combined = learned + 2.0 * prog_fixed

    # Every gate here is code run on the answer: no judge calls, so gate cost is 0 USD; its time is measured.
    table = cascade_outcomes(o, WEAK, STRONG, gate_cost=0.0)
    rows = [
        evaluate("cascade: learned gate (gain)", learned, table, counts),
        evaluate("cascade: arithmetic + final_answer fixed, learned swept", combined, table, counts),
        evaluate("cascade: learned gate (target: wrong)", wrong, table, counts),
        evaluate("cascade: learned gate, answer checks only", answer_only, table, counts),
        evaluate("cascade: arithmetic + final_answer, swept", prog_esc, table, counts),
    ]
    question_only = question_only_scores(o)
    router_rows = [
        evaluate("router: question-only classifier (5-fold)", question_only, o, counts),
        evaluate("oracle (router: strong exactly where it is better)", qs - qw, o, counts),
    ]

    # --- fixed operating point of the programmatic gates ----------------------------------------------
    fixed_q = np.where(prog_fixed, qs, qw)
    fixed_c = cw + np.where(prog_fixed, cs, 0.0)
    gap = qs.mean() - qw.mean()

    # --- print ---------------------------------------------------------------------------------
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    console.print(f"[bold]GSM8K[/] (RouteLLM responses, contaminated dropped): {n} prompts; Mixtral {qw.mean():.1%}, "
                  f"GPT-4 {qs.mean():.1%}; {FOLDS}-fold cross-validation; {args.resamples} bootstrap resamples")
    t = Table(title="cascades vs routers: APGR, CPT (strong share = escalation rate for cascades), "
                    "cost per 1k requests at PGR 80% (USD, estimated tokens)")
    for col in ("", "APGR", "CPT(50%)", "CPT(80%)", "$/1k @PGR80"):
        t.add_column(col, justify="left" if not col else "right")
    for r in rows + router_rows:
        t.add_row(r["name"], fmt(r["apgr"]), fmt(r["cpt50"], pct=True), fmt(r["cpt80"], pct=True),
                  fmt(r["cost80_per_1k"], money=True))
    routellm_cost80 = (ROUTELLM["cpt80"] * cs.mean() + (1 - ROUTELLM["cpt80"]) * cw.mean()) * 1000
    t.add_row("RouteLLM best published router (paper)", f"{ROUTELLM['apgr']:.3f}", f"{ROUTELLM['cpt50']:.1%}",
              f"{ROUTELLM['cpt80']:.1%}", f"{routellm_cost80:.2f} (est.)")
    t.add_row("random (expected)", "0.500", "50.0%", "80.0%", f"{(0.8 * cs.mean() + 0.2 * cw.mean()) * 1000:.2f}")
    console.print(t)

    p = Table(title="operating points (mean per request; cost per 1k requests in USD)")
    for col in ("", "escalated / strong", "accuracy", "PGR", "$/1k", "vs always GPT-4"):
        p.add_column(col, justify="left" if not col else "right")
    always_strong = cs.mean() * 1000
    for label, share, q, c in (
        ("always Mixtral", 0.0, qw.mean(), cw.mean()),
        ("always GPT-4", 1.0, qs.mean(), cs.mean()),
        ("cascade: arithmetic + final_answer (fixed)", prog_fixed.mean(), fixed_q.mean(), fixed_c.mean()),
    ):
        p.add_row(label, f"{share:.1%}", f"{q:.1%}", f"{(q - qw.mean()) / gap:.2f}", f"{c * 1000:.2f}",
                  f"{c * 1000 / always_strong:.1%}")
    for r in rows[:2]:
        curve = r["curve"]
        for x in (0.8, 0.95):
            share = metrics.cpt(curve, x)
            cost = float(cost_at_pgr(curve, x))
            q = qw.mean() + x * gap
            p.add_row(f"{r['name']} @ PGR {x:.0%}", f"{share:.1%}", f"{q:.1%}", f"{x:.2f}", f"{cost * 1000:.2f}",
                      f"{cost * 1000 / always_strong:.1%}")
    console.print(p)
    console.print(f"gate time per request (measured here): learned p50 {np.percentile(learned_secs * 1000, 50):.2f} ms, "
                  f"p95 {np.percentile(learned_secs * 1000, 95):.2f} ms; arithmetic + final_answer p50 "
                  f"{np.percentile(prog.seconds * 1000, 50):.2f} ms, p95 {np.percentile(prog.seconds * 1000, 95):.2f} ms; "
                  f"gate cost $0 (no judge calls)")
    spread = []
    for seed in range(1, args.fold_seeds):
        esc, _, _ = cross_validated_gate(o, checks, fold_seed=seed, target="gain")
        c = ScoreOrder.from_scores(esc).curve(table, WEAK, STRONG)
        spread.append((metrics.apgr(c), metrics.cpt(c, 0.5), metrics.cpt(c, 0.8)))
    if spread:
        first = rows[0]
        spread.insert(0, (first["apgr"].value, first["cpt50"].value, first["cpt80"].value))
        a = np.array(spread)
        console.print(f"learned gate over {len(a)} draws of the folds: APGR {a[:, 0].min():.3f}-{a[:, 0].max():.3f}, "
                      f"CPT(50%) {a[:, 1].min():.1%}-{a[:, 1].max():.1%}, CPT(80%) {a[:, 2].min():.1%}-{a[:, 2].max():.1%}")
    console.print(f"answer checks {t_checks:.1f}s, training {FOLDS} folds {t_train:.1f}s; "
                  f"total {time.perf_counter() - t_start:.1f}s")

    if args.json:
        out = {"prompts": n, "folds": FOLDS, "resamples": args.resamples, "routellm": ROUTELLM,
               "always_strong_per_1k": always_strong, "fold_draws": [list(x) for x in spread], "always_weak_per_1k": cw.mean() * 1000,
               "programmatic_fixed": {"escalated": float(prog_fixed.mean()), "accuracy": float(fixed_q.mean()),
                                      "per_1k": float(fixed_c.mean() * 1000)},
               "rows": [{"name": r["name"], **{k: [r[k].value, r[k].low, r[k].high] for k in STATS}}
                        for r in rows + router_rows]}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
