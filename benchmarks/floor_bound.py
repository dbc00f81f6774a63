"""What a threshold calibrated on n pairs can save at the floor: the ceiling of the lifecycle's savings.

The lifecycle simulation (benchmarks/simulate.py) promotes a learner after a few hundred shadow pairs, with a
threshold whose floor bound holds at the confidence of its check (lab.proof.look_confidence: 98.75% at the
learner's first check, 99.58% at its second). That margin costs savings, whatever the learner. This measures
how much, with the best scores available: a 5-fold cross-fit of the same learner on the whole stream (each
prompt scored by a model trained on ~1,050 others, better than any model trained on the n pairs). Each draw
calibrates the threshold on n random pairs (lab.calibrate.calibrate_scores, the proof's own bound) and serves
the rest of the stream with it; printed: median savings against always-strong, and coverage (the share of
draws whose served quality on the rest stayed >= the floor; the rest is finite, so its own sampling noise
counts, as it does in the simulation). The baseline row is the same cross-fit's threshold chosen on the whole
stream (no finite-sample margin): the "cross-fit" figure of simulate.py, which its goal halves.

    GEARSHIFT_DATA=../shared/datasets python benchmarks/floor_bound.py [--draws 100] [--only gsm8k,mmlu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import simulate  # noqa: E402 - the same streams, priors, config and floor as the simulation

from gearshift.lab.calibrate import QualityFloor, calibrate_scores  # noqa: E402
from gearshift.lab.replay import operating_point  # noqa: E402
from gearshift.lab.train import TrainSettings, cross_fit_scores  # noqa: E402
from gearshift.sim import priced  # noqa: E402

SIZES = (200, 400, 800)
CONFIDENCES = (0.95, 0.9875, 0.9958)  # plain; the learner's first and second checks (lab.proof.look_confidence)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--only", default="gsm8k <-,mmlu <-", help="comma-separated substrings of stream names")
    ap.add_argument("--priors", default=None, help="folder of trained priors (simulate.py --priors)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.priors or tmp)
        for name, outcomes, prior, wcol, scol in simulate.streams(folder, args.only):
            stream = priced(simulate.config(outcomes.name, wcol, scol, prior), outcomes, base_dir=folder)
            scores = cross_fit_scores(stream, TrainSettings(features=simulate.SPEC, weak="weak", strong="strong"),
                                      folds=5, seed=0)
            ref = simulate.reference(stream)["cross_fit_savings_at_floor"]
            cost = np.asarray(stream.cost, float)[:, 1]
            quality = np.asarray(stream.quality, float)[:, 1]
            print(f"\n{name}: {len(stream)} prompts; the cross-fit at the floor, threshold chosen on the whole "
                  f"stream: {ref:.1%} saved (the simulation's goal is half: {ref / 2:.1%})")
            print(f"{'pairs':>6}{'confidence':>12}{'savings (median)':>18}{'[10%, 90%]':>16}{'coverage':>10}")
            rng = np.random.default_rng(0)
            for n in SIZES:
                for conf in CONFIDENCES:
                    saved, covered = [], []
                    for d in range(args.draws):
                        perm = rng.permutation(len(stream))
                        cal, rest = perm[:n], perm[n:]
                        c = calibrate_scores(scores[cal], stream.subset(cal), "weak", "strong",
                                             QualityFloor(simulate.FLOOR), alpha=1 - conf, seed=d)
                        p = operating_point(scores[rest], stream.subset(rest), "weak", "strong", c.threshold)
                        saved.append(1 - p.cost / cost[rest].mean())
                        covered.append(p.quality / quality[rest].mean() >= simulate.FLOOR)
                    lo, hi = np.quantile(saved, [0.1, 0.9])
                    print(f"{n:>6}{conf:>12.2%}{np.median(saved):>18.1%}{f'[{lo:.1%}, {hi:.1%}]':>16}"
                          f"{np.mean(covered):>10.0%}", flush=True)


if __name__ == "__main__":
    main()
