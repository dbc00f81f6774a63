"""Lab speed: a 1,000-threshold sweep over all of MMLU (14k prompts), against a plain Python loop.

Prints prompt-decisions per second for the vectorised sweep (replay.sweep_scores) and for a naive
loop over thresholds and prompts in the same process, their ratio, and the time of the other lab
steps on the same data (loading, every distinct threshold, 1,000 bootstrap resamples of the curve).

    GEARSHIFT_DATA=../shared/datasets python benchmarks/lab.py [--thresholds 1000] [--naive-thresholds 40]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gearshift.lab import metrics
from gearshift.lab.bootstrap import bootstrap_curve
from gearshift.lab.replay import router_scores, sweep_scores
from gearshift.outcomes import datasets
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W
from gearshift.routers.random import RandomOptions, RandomRouter


def best_of(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    """Fastest of `repeat` runs (the machine is shared; the minimum is the least disturbed)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def naive_sweep(scores: list[float], qw: list[float], qs: list[float], cw: list[float], cs: list[float],
                thresholds: list[float]) -> list[tuple[float, float, float]]:
    """One decision per prompt per threshold, in Python: what the vectorised sweep replaces."""
    out = []
    n = len(scores)
    for t in thresholds:
        strong = quality = cost = 0.0
        for i in range(n):
            if scores[i] >= t:
                strong += 1
                quality += qs[i]
                cost += cs[i]
            else:
                quality += qw[i]
                cost += cw[i]
        out.append((strong / n, quality / n, cost / n))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--thresholds", type=int, default=1000)
    ap.add_argument("--naive-thresholds", type=int, default=40, help="thresholds for the (slow) Python loop")
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args()

    datasets.clear_cache()
    t_load, o = best_of(lambda: (datasets.clear_cache(), datasets.load("routellm/mmlu"))[1], repeat=3)
    t_gsm, _ = best_of(lambda: (datasets.clear_cache(), datasets.load("routellm/gsm8k"))[1], repeat=3)
    n = len(o)
    router = RandomRouter("random", RandomOptions(weights={W: 1.0, S: 1.0}, seed=0))
    t_score, scores = best_of(lambda: router_scores(router, o), repeat=1)
    thresholds = np.quantile(scores, np.linspace(0, 1, args.thresholds))

    t_vec, curve = best_of(lambda: sweep_scores(scores, o, W, S, thresholds=thresholds))
    decisions = n * args.thresholds
    vec_rate = decisions / t_vec

    sub = thresholds[:: max(1, args.thresholds // args.naive_thresholds)][: args.naive_thresholds]
    cols = [o.quality[:, 0].tolist(), o.quality[:, 1].tolist(), o.cost[:, 0].tolist(), o.cost[:, 1].tolist()]
    t_naive, naive = best_of(lambda: naive_sweep(scores.tolist(), *cols, thresholds=sub.tolist()), repeat=1)
    naive_rate = n * len(sub) / t_naive
    # Same answers: the vectorised curve at each of those thresholds equals the loop's.
    for t, (share, quality, cost) in zip(sub, naive, strict=True):
        p = curve.at(t)
        assert abs(p.strong_share - share) < 1e-12 and abs(p.quality - quality) < 1e-9 and abs(p.cost - cost) < 1e-12

    t_all, full = best_of(lambda: sweep_scores(scores, o, W, S))
    stats = {"apgr": metrics.apgr, "cpt50": lambda c: metrics.cpt(c, 0.5), "cpt80": lambda c: metrics.cpt(c, 0.8)}
    t_boot, est = best_of(lambda: bootstrap_curve(scores, o, W, S, stats, n=args.resamples), repeat=1)

    print(f"MMLU: {n} prompts, random router (seed 0), machine shared: best of several runs")
    print(f"load routellm/mmlu (57 CSVs): {t_load * 1000:.0f} ms; routellm/gsm8k: {t_gsm * 1000:.0f} ms")
    print(f"score {n} prompts with RandomRouter.scores: {t_score * 1000:.0f} ms")
    print(f"vectorised sweep, {args.thresholds} thresholds: {t_vec * 1000:.1f} ms = {vec_rate / 1e6:.1f} M prompt-decisions/s")
    print(f"naive Python loop, {len(sub)} thresholds: {t_naive:.2f} s = {naive_rate / 1e6:.2f} M prompt-decisions/s")
    print(f"ratio: vectorised / naive = {vec_rate / naive_rate:.0f}x (results identical)")
    print(f"every distinct threshold ({len(full)} operating points): {t_all * 1000:.1f} ms")
    print(f"bootstrap of the curve, {args.resamples} resamples (APGR, CPT50, CPT80): {t_boot:.2f} s "
          f"-> APGR {est['apgr']}, CPT(50%) {est['cpt50']}, CPT(80%) {est['cpt80']}")


if __name__ == "__main__":
    main()
