"""How the proof's "beats random" check errs: its false-promotion rate on a placebo, and its power, by test.

Draws of n pairs of routellm/gsm8k (Mixtral-8x7B -> GPT-4-1106), scored by a router trained on the other
half of the prompts (the default learner, word 1-2 grams hashed to 2^14): the router a retrained gateway
serves. Placebo: the same draws with the pairs' qualities shuffled across prompts (no router can have
signal; the true APGR is 0.5). Four checks, each at one-sided levels 2.5% (the first check at confidence
0.95) and 0.5% (at 0.99):
- bootstrap, all pairs: the APGR bootstrap interval's lower end above 0.5, on every pair (before);
- bootstrap, held-out 30%: the same on a random 30% of the pairs (the issue's literal "held-out part");
- permutation, all pairs / held-out 30%: lab.signal.random_p_value below the level.
Printed: the share of draws each check promotes (placebo: the false-promotion rate, at most the level if the
check is valid; signal: the power).

    GEARSHIFT_DATA=../shared/datasets python benchmarks/proof_power.py [--draws 100] [--sizes 200,400]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gearshift.lab.signal import random_p_value, signal
from gearshift.lab.train import TrainSettings, fit, model_of, pair_scores
from gearshift.learned.features import FeatureSpec
from gearshift.outcomes import datasets
from gearshift.outcomes.table import Outcomes

LEVELS = (0.025, 0.005)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--sizes", default="200,400")
    args = ap.parse_args()
    t0 = time.perf_counter()
    W, S = datasets.ROUTELLM_WEAK, datasets.ROUTELLM_STRONG
    o = datasets.load("routellm/gsm8k").select_models([W, S])
    o = o.subset(np.flatnonzero(~np.isnan(np.asarray(o.quality, float)).any(axis=1)))
    half = np.random.default_rng(0).permutation(len(o)) % 2 == 0
    settings = TrainSettings(features=FeatureSpec(word_bits=14), weak=W, strong=S)
    model = model_of(fit(o.subset(np.flatnonzero(half)), settings))
    test = o.subset(np.flatnonzero(~half))
    scores = pair_scores(model, test)
    print(f"learner {settings.learner}; {len(test)} test prompts; uptime load: {open('/proc/loadavg').read().split()[:3]}")
    print(f"{'stream':<9}{'n':>5}{'check':<28}" + "".join(f"{f'promoted at {a:.1%}':>18}" for a in LEVELS))
    for n in (int(x) for x in args.sizes.split(",")):
        for stream in ("placebo", "signal"):
            hits = {k: np.zeros(len(LEVELS)) for k in ("bootstrap, all pairs", "bootstrap, held-out 30%",
                                                      "permutation, all pairs", "permutation, held-out 30%")}
            for d in range(args.draws):
                rng = np.random.default_rng(1000 + d)
                rows = rng.choice(len(test), n, replace=False)
                pairs, s = test.subset(rows), scores[rows]
                if stream == "placebo":
                    pairs = Outcomes(prompts=pairs.prompts, models=pairs.models, cost=pairs.cost,
                                     quality=np.asarray(pairs.quality)[rng.permutation(n)])
                held = rng.permutation(n)[: int(round(0.3 * n))]
                for part, (p, sc) in (("all pairs", (pairs, s)), ("held-out 30%", (pairs.subset(held), s[held]))):
                    for j, a in enumerate(LEVELS):
                        sig = signal(sc, p, W, S, n_boot=1000, seed=d, alpha=2 * a)
                        hits[f"bootstrap, {part}"][j] += sig.has_signal
                    pv = random_p_value(sc, p, W, S, seed=d)
                    hits[f"permutation, {part}"] += [pv <= a for a in LEVELS]
            for k, h in hits.items():
                print(f"{stream:<9}{n:>5}  {k:<26}" + "".join(f"{x / args.draws:>18.1%}" for x in h))
    print(f"{args.draws} draws per row; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
