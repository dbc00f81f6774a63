"""How large PSI gets on ordinary traffic: the false-alarm side of the watch's PSI bound.

For each recorded stream (GSM8K in its recorded order, MMLU shuffled, each RouterBench task in its
recorded order, test then train), a baseline block of `--baseline` prompts (the watch's
window_requests) is compared with a later window block of n prompts (min_requests 100 .. window 500),
as the watch does: 10 bins at the baseline's deciles, PSI of prompt length (estimated tokens, as the
gateway counts them) and of the router's score (a classifier router fitted on the other half of the
prompts, scoring the half the blocks come from). Two samplings: `consecutive` (the window right after
the baseline, at random offsets, wrapping round) and `random` (both blocks drawn at random, disjoint).
Same traffic throughout, so every PSI here is a false alarm above the bound.

Prints, per stream, metric and window size: the 50th/95th/99th percentile and max over `--trials`
draws, the chi-square noise estimate `psi_noise`, the bound the watch applies (0.25 raised to the noise's
`--quantile`, see watch.drift.psi_bound),
and the share of draws above 0.25 and above the noise-aware bound.

    GEARSHIFT_DATA=../shared/datasets python benchmarks/psi_bounds.py [--trials 500] [--baseline 500] [--quantile 0.999]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from gearshift.lab.train import TrainSettings, default_features, fit, model_of, pair_scores, requests_of
from gearshift.outcomes import datasets
from gearshift.outcomes.table import Outcomes
from gearshift.watch.drift import Histogram, psi, psi_bound


def streams(seed: int) -> list[tuple[str, Outcomes]]:
    rng = np.random.default_rng(seed)
    mmlu = datasets.load_mmlu()
    out = [("routellm/gsm8k", datasets.load_gsm8k()),
           ("routellm/mmlu (shuffled)", mmlu.subset(rng.permutation(len(mmlu))))]
    for task in ("arc_challenge", "mbpp", "winograde"):
        out.append((f"routerbench/{task}", datasets.load_routerbench(task)))
    return out


def _settings(o: Outcomes, train: Outcomes) -> TrainSettings:
    if len(o.models) > 2:  # RouterBench: the cheapest and the best model as the pair
        q, c = np.nanmean(o.quality, axis=0), np.nanmean(o.cost, axis=0)
        return TrainSettings(features=default_features(train), weak=o.models[int(np.argmin(c))],
                             strong=o.models[int(np.argmax(q))])
    return TrainSettings(features=default_features(train))


def scores(o: Outcomes, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompt tokens of every prompt, in stream order, and the router's score of each, cross-fitted
    (two halves, each scored by a router fitted on the other), as a served router never saw them."""
    rng = np.random.default_rng(seed)
    half = np.zeros(len(o), dtype=bool)
    half[rng.permutation(len(o))[: len(o) // 2]] = True
    score = np.empty(len(o))
    for side in (half, ~half):
        train, test = o.subset(np.flatnonzero(~side)), o.subset(np.flatnonzero(side))
        score[side] = pair_scores(model_of(fit(train, _settings(o, train))), test)
    tokens = np.array([r.estimated_tokens() for r in requests_of(o)], dtype=float)
    return tokens, score


def draws(values: np.ndarray, n_b: int, n_w: int, trials: int, how: str, rng: np.random.Generator) -> np.ndarray:
    n = len(values)
    out = np.empty(trials)
    for t in range(trials):
        if how == "consecutive":
            start = int(rng.integers(n))
            idx = (start + np.arange(n_b + n_w)) % n
            b, w = values[idx[:n_b]], values[idx[n_b:]]
        else:
            idx = rng.permutation(n)
            b, w = values[idx[:n_b]], values[idx[n_b:n_b + n_w]]
        h = Histogram.fit(b, bins=10)
        assert h is not None
        out[t] = psi(h.counts, h.count(w))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--baseline", type=int, default=500)
    ap.add_argument("--windows", default="100,200,300,500")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quantile", type=float, default=0.999, help="of the noise term in the watch's bound")
    args = ap.parse_args(argv)
    windows = [int(w) for w in args.windows.split(",")]
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    print(f"baseline {args.baseline} prompts, 10 bins, {args.trials} draws per cell; "
          f"bound = max(0.25, noise's simulated {args.quantile:g} quantile); >bound = share of draws above it")
    print(f"{'stream':26} {'metric':7} {'how':11} {'n_w':>4} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>6} "
          f"{'noise':>6} {'bound':>7} {'>0.25':>6} {'>bound':>6}")
    for name, o in streams(args.seed):
        tokens, score = scores(o, args.seed)
        for metric, values in (("tokens", tokens), ("score", score)):
            for how in ("consecutive", "random"):
                for n_w in windows:
                    if args.baseline + n_w > len(values):
                        continue
                    d = draws(values, args.baseline, n_w, args.trials, how, rng)
                    h = Histogram.fit(values[: args.baseline], bins=10)
                    k = len(h.counts) if h is not None else 10
                    noise = (k - 1) * (1 / args.baseline + 1 / n_w)
                    bound = psi_bound(0.25, h.counts if h is not None else [50] * 10, n_w, args.quantile)
                    p50, p95, p99 = np.percentile(d, [50, 95, 99])
                    print(f"{name:26} {metric:7} {how:11} {n_w:4d} {p50:6.3f} {p95:6.3f} {p99:6.3f} {d.max():6.3f} "
                          f"{noise:6.3f} {bound:7.3f} {np.mean(d > 0.25):6.3f} {np.mean(d > bound):6.3f}")
        sys.stdout.flush()
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
