"""The classifier router against RouteLLM on RouteLLM's own data, and over RouterBench's models.

Protocol (RouteLLM paper, arXiv 2406.18665: strong GPT-4-1106, weak Mixtral-8x7B, contaminated
prompts dropped):

- Within-benchmark: 5-fold cross-validation on MMLU and on GSM8K. Train on four folds (features,
  metadata vocabulary and scaling are fitted on those folds only), score the fifth with the saved-
  and-served model; the five held-out folds make one curve over all prompts. APGR, CPT(50%) and
  CPT(80%) from gearshift.lab.metrics, with 95% bootstrap percentile intervals over prompts
  (gearshift.lab.bootstrap). Rows: our default (`gain`: predict both models' quality, score the
  predicted gain), the `weak-fails` target (RouteLLM's formulation, same features), random and the
  oracle; next to RouteLLM's best published numbers.
- Transfer: train on all of MMLU, test on GSM8K, and vice versa (no metadata carries over).
- Several models: RouterBench (11 models) per task, train on its train split, test on its test
  split; the router's lambda sweep (max predicted quality - lambda x cost) as (cost, quality)
  points; AIQ over the single models' cost range, against each single model, their convex hull
  (RouterBench's zero router) and the oracle.

The gap to RouteLLM is ours minus theirs, with our interval (their numbers carry none).

    GEARSHIFT_DATA=../shared/datasets python benchmarks/routellm_compare.py [--only mmlu,gsm8k,transfer,routerbench]
        [--folds 5] [--resamples 1000] [--json out.json] [--fold-seeds 5] [--learning-curve]
        [--encoder sentence-transformers --encoder-model NAME_OR_PATH]

`--fold-seeds N` repeats the default's CV over N random fold splits (mean and range: how much the
split alone moves a figure); `--learning-curve` trains it on 25/50/75% of each training split (is
it limited by data?).

With `--encoder`, the within-benchmark tables get one more row: the default features plus the
encoder's sentence vector (as `gearshift lab train --encoder ...` trains it). Each prompt is
encoded once and the vectors reused across folds (the encoder has no fitted state).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gearshift.lab import metrics
from gearshift.lab.bootstrap import Estimate, bootstrap, bootstrap_curve
from gearshift.lab.replay import sweep_scores
from gearshift.lab.train import (
    TrainSettings,
    default_features,
    fit,
    model_of,
    multi_decisions,
    pair_scores,
    pair_stats,
)
from gearshift.learned.encoders import Encoder, make_encoder
from gearshift.outcomes import datasets
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W
from gearshift.outcomes.table import Outcomes

# RouteLLM paper, Tables 2 and 3: the best router on each benchmark (as recorded in shared/datasets/README.md).
PUBLISHED = {
    "mmlu": {"router": "RouteLLM best (gold-label trained)", "apgr": 0.603, "cpt50": 0.354, "cpt80": 0.703},
    "gsm8k": {"router": "RouteLLM best (Causal LLM, judge-augmented)", "apgr": 0.622, "cpt50": 0.336, "cpt80": 0.633},
}
GOAL = {"mmlu": {"apgr": 0.72, "cpt80": 0.50}}
STATS = pair_stats()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def folds_of(n: int, k: int, seed: int) -> list[np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(perm[i::k]) for i in range(k)]


class CachedEncoder:
    """An encoder that encodes each distinct text once: CV re-featurizes every prompt in every fold."""

    remote = False

    def __init__(self, inner: Encoder) -> None:
        self.inner, self.kind, self.dim = inner, inner.kind, inner.dim
        self._memo: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            self._memo.update(zip(missing, self.inner.encode(missing), strict=True))
        return np.stack([self._memo[t] for t in texts]) if texts else np.zeros((0, self.dim))

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


def cv_scores(o: Outcomes, settings: TrainSettings, k: int, seed: int, encoder: Encoder | None = None,
              train_share: float = 1.0) -> np.ndarray:
    """Out-of-fold scores: each prompt scored by a router trained without its fold.

    train_share < 1 trains on a random share of the other folds (a learning-curve point)."""
    scores = np.empty(len(o))
    rng = np.random.default_rng(seed + 1)
    for i, test in enumerate(folds_of(len(o), k, seed)):
        train = np.setdiff1d(np.arange(len(o)), test)
        if train_share < 1:
            train = np.sort(rng.choice(train, int(round(len(train) * train_share)), replace=False))
        model = model_of(fit(o.subset(train), settings, encoder=encoder), encoder)
        scores[test] = pair_scores(model, o.subset(test))
        log(f"  fold {i + 1}/{k}: trained on {len(train)}, scored {len(test)}")
    return scores


def curve_row(name: str, scores: np.ndarray, o: Outcomes, resamples: int, seed: int) -> dict[str, Any]:
    est = bootstrap_curve(scores, o, W, S, STATS, n=resamples, seed=seed)
    return {"router": name, **{k: e for k, e in est.items()}}


@dataclass(frozen=True)
class Spread:
    """A mean with its range over repeated runs (not a confidence interval)."""

    value: float
    low: float
    high: float

    def format(self, spec: str, scale: float = 1.0, suffix: str = "") -> str:
        def f(x: float) -> str:
            return f"{x * scale:{spec}}{suffix}"

        return f"{f(self.value)} ({f(self.low)}-{f(self.high)})"


def gap(ours: Estimate, theirs: float) -> Estimate:
    return Estimate(ours.value - theirs, ours.low - theirs, ours.high - theirs, ours.alpha, ours.n_resamples)


def fmt_row(r: dict[str, Any]) -> str:
    def cell(k: str, pct: bool) -> str:
        v = r.get(k)
        if v is None:
            return "-".rjust(25)
        if isinstance(v, Estimate | Spread):
            return (v.format(".1f", 100, "%") if pct else v.format(".3f")).rjust(25)
        return (f"{v:.1%}" if pct else f"{v:.3f}").rjust(25)

    return f"  {r['router']:<44}{cell('apgr', False)}{cell('cpt50', True)}{cell('cpt80', True)}"


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"  {'router':<44}{'APGR':>25}{'CPT(50%)':>25}{'CPT(80%)':>25}")
    for r in rows:
        print(fmt_row(r))


def within(bench: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    o = datasets.load(f"routellm/{bench}", drop_contaminated=True)
    log(f"{bench}: {len(o)} prompts (contaminated dropped), {args.folds}-fold CV")
    base = TrainSettings(features=default_features(o))
    rows = []
    t = time.time()
    s_gain = cv_scores(o, base, args.folds, args.seed)
    log(f"  gain: {time.time() - t:.0f} s")
    rows.append(curve_row("gearshift classifier (gain, default)", s_gain, o, args.resamples, args.seed))
    if args.encoder_obj is not None:
        t = time.time()
        s_enc = cv_scores(o, base, args.folds, args.seed, args.encoder_obj)
        log(f"  gain + encoder: {time.time() - t:.0f} s")
        name = f"gearshift classifier (gain, + {args.encoder_obj.kind} encoder)"
        rows.append(curve_row(name, s_enc, o, args.resamples, args.seed))
    if not args.quick:
        s_fail = cv_scores(o, replace(base, target="weak-fails"), args.folds, args.seed)
        rows.append(curve_row("gearshift classifier (weak-fails target)", s_fail, o, args.resamples, args.seed))
    if "task" in o.meta:
        task_gain, task_oracle = task_mean_scores(o, args.folds, args.seed)
        rows.append(curve_row("subject's mean gain (training folds)", task_gain, o, args.resamples, args.seed))
        rows.append(curve_row("subject oracle (test labels: a bound)", task_oracle, o, args.resamples, args.seed))
    rows.append(curve_row("random (expected)", np.zeros(len(o)), o, args.resamples, args.seed))
    rows.append(curve_row("oracle", np.asarray(o.quality[:, 1] - o.quality[:, 0]), o, args.resamples, args.seed))
    pub = PUBLISHED[bench]
    rows.append({"router": f"published: {pub['router']}", "apgr": pub["apgr"], "cpt50": pub["cpt50"],
                 "cpt80": pub["cpt80"]})
    ours = rows[0]
    rows.append({"router": "gap: ours - RouteLLM best", **{k: gap(ours[k], pub[k]) for k in ("apgr", "cpt50", "cpt80")}})
    if args.fold_seeds > 1:
        rows.append(fold_seed_row(o, base, args, s_gain))
    if args.learning_curve:
        rows.extend(learning_curve_rows(o, base, args, s_gain))
    return rows


def task_mean_scores(o: Outcomes, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt scored by its task's mean gain: from the training folds (a router that knows only
    the subject), and from all prompts (the best any subject-only router could do)."""
    task = np.array([str(t) for t in o.meta["task"]])
    gain = np.asarray(o.quality[:, 1] - o.quality[:, 0], dtype=float)
    oracle = {t: gain[task == t].mean() for t in np.unique(task)}
    from_training = np.empty(len(o))
    for test in folds_of(len(o), k, seed):
        train = np.setdiff1d(np.arange(len(o)), test)
        means = {t: gain[train][task[train] == t].mean() for t in np.unique(task[train])}
        from_training[test] = [means.get(t, 0.0) for t in task[test]]
    return from_training, np.array([oracle[t] for t in task])


def point(scores: np.ndarray, o: Outcomes) -> dict[str, float]:
    """APGR, CPT(50%), CPT(80%) of one set of scores (no resampling)."""
    c = sweep_scores(scores, o, W, S)
    return {k: float(f(c)) for k, f in STATS.items()}


def fold_seed_row(o: Outcomes, base: TrainSettings, args: argparse.Namespace, first: np.ndarray) -> dict[str, Any]:
    """The default router's figures over several random fold splits: how much the split alone moves them.

    The bootstrap intervals above resample prompts for one split; this is the other source of noise
    in a CV figure, and the reason a single split's point estimate is no proof of a small gap."""
    points = [point(first, o)]
    for seed in range(args.seed + 1, args.seed + args.fold_seeds):
        log(f"  fold split {seed - args.seed + 1}/{args.fold_seeds}")
        points.append(point(cv_scores(o, base, args.folds, seed), o))
    spread = {k: np.array([p[k] for p in points]) for k in STATS}
    return {"router": f"default over {args.fold_seeds} fold splits: mean (min-max)",
            **{k: Spread(float(v.mean()), float(v.min()), float(v.max())) for k, v in spread.items()}}


def learning_curve_rows(o: Outcomes, base: TrainSettings, args: argparse.Namespace,
                        full: np.ndarray) -> list[dict[str, Any]]:
    """The default router trained on a share of each training split: is it limited by data?"""
    n_train = len(o) - len(o) // args.folds
    rows = []
    for share in (0.25, 0.5, 0.75):
        log(f"  learning curve: {share:.0%} of each training split")
        p = point(cv_scores(o, base, args.folds, args.seed, train_share=share), o)
        rows.append({"router": f"learning curve: trained on {int(n_train * share)} prompts", **p})
    rows.append({"router": f"learning curve: trained on {n_train} prompts (all)", **point(full, o)})
    return rows


def transfer(args: argparse.Namespace) -> list[dict[str, Any]]:
    data = {b: datasets.load(f"routellm/{b}", drop_contaminated=True) for b in ("mmlu", "gsm8k")}
    rows = []
    for src, dst in (("mmlu", "gsm8k"), ("gsm8k", "mmlu")):
        log(f"transfer: train on {src}, test on {dst}")
        model = model_of(fit(data[src], TrainSettings(features=default_features(data[src]))))
        scores = pair_scores(model, data[dst])
        rows.append(curve_row(f"train {src} -> test {dst}", scores, data[dst], args.resamples, args.seed))
    return rows


def routerbench(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for task in datasets.ROUTERBENCH_TASKS:
        o = datasets.load(f"routerbench/{task}")
        train, test = o.split("train"), o.split("test")
        log(f"routerbench/{task}: train {len(train)}, test {len(test)}, {len(o.models)} models")
        model = model_of(fit(train, TrainSettings(form="multi", features=default_features(train))))
        lambdas = np.concatenate([[0.0], np.geomspace(1e-2, 1e5, 200)])
        rc, rq = multi_decisions(model, test, lambdas)  # (n, L) per prompt, per lambda
        cols = [test.index(m) for m in test.models]
        mcost, mqual = np.asarray(test.cost[:, cols], float), np.asarray(test.quality[:, cols], float)
        c, q = np.nanmean(rc, axis=0), np.nanmean(rq, axis=0)
        mc, mq = np.nanmean(mcost, axis=0), np.nanmean(mqual, axis=0)
        rng = (float(np.nanmin(mc)), float(np.nanmax(mc)))
        hc, hq = metrics.zero_router(test)
        oracle = metrics.oracle_decisions(test)

        def aiqs(data, w, rng=rng):  # type: ignore[no-untyped-def]
            # Resampled prompts (counts w): both routers' points and AIQs over the full data's cost range.
            # NaN-aware weighted means (a few RouterBench calls lack a cost or a quality).
            means = [(w @ np.nan_to_num(x)) / (w @ ~np.isnan(x)) for x in data]
            out: dict[str, list[float]] = {"router": [], "zero": [], "gap": []}
            for i in range(w.shape[0]):
                a = metrics.aiq(means[0][i], means[1][i], rng)
                z = metrics.aiq(means[2][i], means[3][i], rng)
                out["router"].append(a)
                out["zero"].append(z)
                out["gap"].append(a - z)
            return {k: np.array(v) for k, v in out.items()}

        est = bootstrap((rc, rq, mcost, mqual), aiqs, n=args.resamples, seed=args.seed, weighted=True)
        rows = {"task": task, "train": len(train), "test": len(test), "cost_range": rng,
                "router_aiq": est["router"], "zero_router_aiq": est["zero"], "aiq_gap": est["gap"],
                "oracle": (float(np.nanmean(oracle.cost)), float(np.nanmean(oracle.quality))),
                "router_best_quality": float(np.max(q)), "router_cost_at_best": float(c[int(np.argmax(q))]),
                "models": {m: (float(mc[i]), float(mq[i])) for i, m in enumerate(test.models)},
                "hull": list(zip(hc.tolist(), hq.tolist(), strict=True))}
        # Router quality at each single model's cost: does it beat the model at equal spend?
        rhc, rhq = metrics.ndch(c, q)
        rows["at_model_cost"] = {m: float(metrics.hull_value(rhc, rhq, mc[i])) for i, m in enumerate(test.models)}
        out.append(rows)
    return out


def print_routerbench(rows: list[dict[str, Any]]) -> None:
    print("\nSeveral models: RouterBench, train split -> test split (max predicted quality - lambda x cost)")
    for r in rows:
        lo, hi = r["cost_range"]
        print(f"  {r['task']} (train {r['train']}, test {r['test']}): AIQ router {r['router_aiq']} vs zero router "
              f"(single models' hull) {r['zero_router_aiq']}; gap {r['aiq_gap']}; over cost ${lo:.6f}-${hi:.6f}")
        print(f"    oracle: quality {r['oracle'][1]:.3f} at ${r['oracle'][0]:.6f}; router best quality "
              f"{r['router_best_quality']:.3f} at ${r['router_cost_at_best']:.6f}")
        best = sorted(r["models"].items(), key=lambda kv: -kv[1][1])[:4]
        for m, (c, q) in best:
            print(f"    {m:<28} quality {q:.3f} at ${c:.6f}; router at that cost {r['at_model_cost'][m]:.3f}")


def jsonable(x: Any) -> Any:
    if isinstance(x, Estimate | Spread):
        return {"value": x.value, "low": x.low, "high": x.high}
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="mmlu,gsm8k,transfer,routerbench")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="skip the weak-fails rows")
    ap.add_argument("--fold-seeds", type=int, default=1,
                    help="also repeat the default's CV over this many random fold splits (mean and range)")
    ap.add_argument("--learning-curve", action="store_true",
                    help="also train the default on 25/50/75%% of each training split")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--encoder", choices=["none", "sentence-transformers"], default="none",
                    help="also run the within-benchmark CV with this encoder's vector added to the default features")
    ap.add_argument("--encoder-model", default=None, help="encoder model name or local path")
    args = ap.parse_args()
    args.encoder_obj = None
    if args.encoder != "none":
        if not args.encoder_model:
            ap.error("--encoder needs --encoder-model")
        args.encoder_obj = CachedEncoder(make_encoder({"kind": args.encoder, "model": args.encoder_model}))
    parts = args.only.split(",")
    result: dict[str, Any] = {}
    for bench in ("mmlu", "gsm8k"):
        if bench in parts:
            result[bench] = within(bench, args)
            print_table(f"Within-benchmark: RouteLLM {bench.upper()}, {args.folds}-fold CV, one curve over all "
                        f"prompts (95% bootstrap intervals, {args.resamples} resamples)", result[bench])
            goal = GOAL.get(bench)
            for ours in result[bench] if goal else []:
                if not ours["router"].startswith("gearshift classifier (gain"):
                    continue
                met = ours["apgr"].value >= goal["apgr"] and ours["cpt80"].value <= goal["cpt80"]
                print(f"  goal (APGR >= {goal['apgr']}, CPT(80%) <= {goal['cpt80']:.0%}), {ours['router']}: "
                      f"{'met' if met else 'NOT met'}")
    if "transfer" in parts:
        result["transfer"] = transfer(args)
        print_table("Transfer (no metadata carries over): train on one benchmark, test on the other",
                    result["transfer"])
    if "routerbench" in parts:
        result["routerbench"] = routerbench(args)
        print_routerbench(result["routerbench"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(jsonable(result), f, indent=1)


if __name__ == "__main__":
    main()
