"""How the cross-fit proof's "beats random" test errs: its false-promotion rate on placebo draws, and its power.

A retrained gateway proves its *learner* (lab.retrain.prove_learner): out-of-fold scores of the router's
training procedure on all its pairs, then a permutation test against random on those scores. Draws of n pairs
of routellm/gsm8k (Mixtral-8x7B -> GPT-4-1106); the learner is the default (stack) with the simulation's
features (word 1-2 grams hashed to 2^14); 5 folds. Placebo: the draw's qualities shuffled across its prompts
(the true APGR is 0.5). Tests:
- plain cross-fit, pooled: each fold scored by a model fitted on the 4 others, the gains permuted over all
  pairs (lab.signal.random_p_value). Not exact: each fold's model learned the other folds' noise, and the
  folds' statistics are positively dependent (a degenerate U-statistic with a heavier right tail);
- plain cross-fit, within folds: the same scores, gains permuted within each fold (no better);
- chained, stratified (what the gateway uses): fold k scored by a model fitted on folds 0..k-1 only, each
  fold ranked within itself, the gains permuted within folds (random_p_value's `groups`). Exact: under no
  signal, each fold's permutation law holds given every earlier fold, so the folds' statistics combine as
  independent ones.
Printed: the share of draws whose p-value is at or below each level (placebo: the false-promotion rate, at
most the level if the test is valid; signal: the power), and the load.

Measured (150 placebo draws of n = 300, load average 2-4 on 2 cores), share at p <= 10% / 5% / 2.5% / 1%:
plain, pooled 15.3% / 10.0% / 6.7% / 4.7%; plain, in folds 18.0% / 9.3% / 6.0% / 4.7%; chained 9.3% / 3.3% /
0.7% / 0.7% (at or below each level: the one the gateway uses). Power on 150 draws with signal: plain,
pooled 76.7% / 66.0% / 59.3% / 48.7% (not valid); chained 58.0% / 48.0% / 37.3% / 22.7%: exactness costs the
chained test about half its power at 1%, its fold models being fitted on fewer pairs. Total 2,001 s.

    GEARSHIFT_DATA=../shared/datasets python benchmarks/crossfit_power.py [--draws 100] [--sizes 300]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from gearshift.lab.signal import random_p_value
from gearshift.lab.train import TrainSettings, cross_fit_scores, fold_of
from gearshift.learned.features import FeatureSpec
from gearshift.outcomes import datasets
from gearshift.outcomes.table import Outcomes

LEVELS = (0.10, 0.05, 0.025, 0.01)
FOLDS = 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--sizes", default="300")
    ap.add_argument("--streams", default="placebo,signal")
    ap.add_argument("--chained-only", action="store_true", help="only the chained test (the gateway's)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    W, S = datasets.ROUTELLM_WEAK, datasets.ROUTELLM_STRONG
    o = datasets.load("routellm/gsm8k").select_models([W, S])
    o = o.subset(np.flatnonzero(~np.isnan(np.asarray(o.quality, float)).any(axis=1)))
    settings = TrainSettings(features=FeatureSpec(word_bits=14), weak=W, strong=S)
    print(f"learner {settings.learner}, {FOLDS} folds; {len(o)} prompts; load {os.getloadavg()}")
    print(f"{'stream':<9}{'n':>5}  {'test':<16}" + "".join(f"{f'p <= {a:g}':>12}" for a in LEVELS))
    for n in (int(x) for x in args.sizes.split(",")):
        for stream in args.streams.split(","):
            p: dict[str, list[float]] = {"plain, pooled": [], "plain, in folds": [], "chained": []}
            for d in range(args.draws):
                rng = np.random.default_rng(1000 + d)
                pairs = o.subset(np.sort(rng.choice(len(o), n, replace=False)))
                if stream == "placebo":
                    pairs = Outcomes(prompts=pairs.prompts, models=pairs.models, cost=pairs.cost,
                                     quality=np.asarray(pairs.quality)[rng.permutation(n)])
                folds = fold_of(n, FOLDS, d)
                if not args.chained_only:
                    scores = cross_fit_scores(pairs, settings, FOLDS, seed=d)
                    p["plain, pooled"].append(random_p_value(scores, pairs, W, S, seed=d))
                    p["plain, in folds"].append(random_p_value(scores, pairs, W, S, seed=d, groups=folds))
                scores = cross_fit_scores(pairs, settings, FOLDS, seed=d, chained=True)
                at = np.flatnonzero(folds > 0)
                p["chained"].append(random_p_value(scores[at], pairs.subset(at), W, S, seed=d, groups=folds[at]))
            for k, v in p.items():
                if not v:
                    continue
                x = np.asarray(v)
                print(f"{stream:<9}{n:>5}  {k:<16}" + "".join(f"{np.mean(x <= a):>12.1%}" for a in LEVELS), flush=True)
    print(f"{args.draws} draws per row; load {os.getloadavg()}; "
          f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
