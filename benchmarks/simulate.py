"""The lifecycle simulation on transfer streams: a classifier trained elsewhere starts in observe on a
new stream, shadows, proves its learner by a cross-fit on its pairs (gateway proof with `retrain`), is refitted
and promoted (or not), over 20 seeds.

Streams (each model's recorded correctness is its quality; weak -> strong):
- routellm/gsm8k with a prior trained on routellm/mmlu, and the reverse (Mixtral-8x7B -> GPT-4-1106);
- each RouterBench task (arc_challenge, mbpp, winograde) with a prior trained on the other two
  (mixtral-8x7b-chat -> gpt-4-1106-preview);
- placebo: routellm/gsm8k with the qualities of its prompts shuffled (no router can have a signal).

Every stream runs through `gearshift.sim.simulate` (the gateway's own request path, shadow sampling,
version loop and watch, in-process) with one config: shadow rate 0.5, and 1.0 while observing (observe_rate:
a pair then costs only the weak model's call; explore: the weak model, each answer graded by its recorded
quality), daily shadow budget $5, proof {min_pairs 500 (the default), floor 0.95, confidence 0.95, auto_promote,
every_hours 1, retrain} and the defaults (signal_confidence 0.99: the permutation test
against random; demotion only on evidence, lab.proof.recheck), 100 requests per simulated hour, and each seed serving
its own shuffled order of the whole table, at most `--limit` (3000) requests: only MMLU (13,937 prompts) is cut.
A stream cut at 1,000 requests, as before, lets the MMLU learner see at most 1,000 pairs where the goal's
reference is fitted on 6,968; GSM8K (1,319) and the RouterBench tasks run whole either way. Priors use compact features (word 1-2 grams
hashed to 2^14) so that retraining, which reuses the prior's features, stays quick.

Printed per stream: floor coverage at 0.95 (share of seeds whose served quality after the first
promotion stayed >= 95% of always-strong's; seeds never promoted count as covered), how many seeds
promoted, median pairs and shadow dollars until the first promotion, median savings after it, and the
reference: the same learner trained on the whole stream (in-sample), at the cheapest point of its
curve keeping 95% of always-strong quality, priced alike. "signal" is the APGR interval of a 2-fold
cross-fit of that learner on the stream (lab.signal): a stream without one should never promote. The
"goal" column: on streams with signal, coverage >= 95% and savings >= half the cross-fit's (the in-sample
figure scores prompts the model memorised); on streams without, no seed promoted.

    GEARSHIFT_DATA=../shared/datasets python benchmarks/simulate.py [--seeds 20] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from gearshift.lab.levels import cheapest_reaching
from gearshift.lab.replay import sweep_scores
from gearshift.lab.signal import signal
from gearshift.lab.train import TrainSettings, cross_fit_scores, fit, model_of, pair_scores
from gearshift.learned import artifact
from gearshift.learned.features import FeatureSpec
from gearshift.outcomes import datasets
from gearshift.outcomes.table import Outcomes
from gearshift.sim import priced, simulate

FLOOR = 0.95
SPEC = FeatureSpec(word_bits=14)
RB_WEAK, RB_STRONG = "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def config(dataset: str, weak_col: str, strong_col: str, prior: Path) -> dict[str, Any]:
    return {
        "models": {
            "weak": {"provider": "replay", "replay": {"dataset": dataset, "column": weak_col},
                     "price": {"input": 0.6, "output": 0.6}, "rank": 1},
            "strong": {"provider": "replay", "replay": {"dataset": dataset, "column": strong_col},
                       "price": {"input": 10, "output": 30}, "rank": 10},
        },
        "routers": {"smart": {
            "kind": "classifier", "artifact": str(prior), "threshold": 0.5, "mode": "observe",
            "shadow": {"rate": 0.5, "observe_rate": 1.0, "compare": "recorded", "explore": "weak",
                       "daily_budget_usd": 5.0},
            "proof": {"min_pairs": 500, "floor": FLOOR, "confidence": 0.95, "auto_promote": True,
                      "every_hours": 1, "retrain": True}}},
        "watch": {"enabled": True, "router": "smart", "window_requests": 200, "min_requests": 100},
    }


def two(o: Outcomes, weak: str, strong: str) -> Outcomes:
    """The pair's columns, renamed weak/strong, rows both graded."""
    p = o.select_models([weak, strong])
    p = p.subset(np.flatnonzero(~np.isnan(np.asarray(p.quality, float)).any(axis=1)))
    return Outcomes(prompts=p.prompts, models=["weak", "strong"], quality=p.quality, cost=p.cost, meta=p.meta,
                    name=p.name)


def train_prior(o: Outcomes, path: Path) -> Path:
    artifact.save(fit(o, TrainSettings(features=SPEC, weak="weak", strong="strong")), path)
    return path


def shuffled(o: Outcomes, seed: int = 12345) -> Outcomes:
    """The same prompts with the rows of qualities permuted: prompts say nothing about quality any more."""
    perm = np.random.default_rng(seed).permutation(len(o))
    return Outcomes(prompts=o.prompts, models=o.models, quality=np.asarray(o.quality)[perm],
                    cost=o.cost, responses=None, meta=o.meta, name=o.name + " (shuffled)")


def streams(folder: Path, only: str | None = None) -> list[tuple[str, Outcomes, Path, str, str]]:
    """(name, stream outcomes, prior artifact, weak column, strong column) of every transfer stream (of those
    whose names contain one of the comma-separated `only`); priors are trained for those only."""
    W, S = datasets.ROUTELLM_WEAK, datasets.ROUTELLM_STRONG
    wanted = [
        ("gsm8k <- mmlu prior", "routellm/gsm8k", "mmlu"), ("mmlu <- gsm8k prior", "routellm/mmlu", "gsm8k"),
        *((f"{t} <- other tasks' prior", f"routerbench/{t}", t) for t in datasets.ROUTERBENCH_TASKS),
        ("placebo: gsm8k, qualities shuffled", "routellm/gsm8k", "mmlu"),
    ]
    wanted = [w for w in wanted if not only or any(x in w[0] for x in only.split(","))]
    priors: dict[str, Path] = {}

    def prior(key: str) -> Path:
        if key not in priors and (folder / f"prior-{key}.json").is_file():  # trained by an earlier run
            priors[key] = folder / f"prior-{key}.json"
        if key not in priors:
            if key in ("mmlu", "gsm8k"):
                o = two(datasets.load(f"routellm/{key}"), W, S)
            else:
                others = [two(datasets.load(f"routerbench/{u}"), RB_WEAK, RB_STRONG)
                          for u in datasets.ROUTERBENCH_TASKS if u != key]
                o = Outcomes(prompts=np.concatenate([x.prompts for x in others]), models=["weak", "strong"],
                             quality=np.concatenate([x.quality for x in others]),
                             cost=np.concatenate([x.cost for x in others]))
            log(f"training the prior {'on ' + key if key in ('mmlu', 'gsm8k') else 'for ' + key} ({len(o)} prompts)")
            priors[key] = train_prior(o, folder / f"prior-{key}.json")
        return priors[key]

    out = []
    for name, spec, key in wanted:
        o = datasets.load(spec)
        cols = (W, S) if spec.startswith("routellm") else (RB_WEAK, RB_STRONG)
        out.append((name, shuffled(o) if name.startswith("placebo") else o, prior(key), *cols))
    return out


def reference(stream: Outcomes) -> dict[str, Any]:
    """The learner trained on the whole stream (in-sample) at the floor, and a 2-fold cross-fit's signal."""
    q_strong, c_strong = float(np.mean(stream.quality[:, 1])), float(np.mean(stream.cost[:, 1]))

    def at_floor(scores: np.ndarray) -> float:
        c = sweep_scores(scores, stream, "weak", "strong")
        cost, _ = cheapest_reaching(c.strong_share, c.quality, c.cost, FLOOR * q_strong)
        return 1.0 - float(cost) / c_strong

    settings = TrainSettings(features=SPEC, weak="weak", strong="strong")
    scores = pair_scores(model_of(fit(stream, settings)), stream)
    cross = cross_fit_scores(stream, settings, folds=2, seed=0)
    sig = signal(cross, stream, "weak", "strong")
    return {"savings_at_floor": at_floor(scores), "cross_fit_savings_at_floor": at_floor(cross),
            "signal": sig.to_json(), "has_signal": sig.has_signal}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--limit", type=int, default=3000, help="requests per seed at most (each seed its own shuffle)")
    ap.add_argument("--quick", action="store_true", help="5 seeds of 800 requests")
    ap.add_argument("--judge-agreement", type=float, default=None)
    ap.add_argument("--only", default=None, help="comma-separated substrings of stream names")
    ap.add_argument("--json", default=None, help="write every figure here (after each stream)")
    ap.add_argument("--priors", default=None, help="folder to keep the trained priors in and reuse them from")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.limit = 5, 800
    logging.basicConfig(level=logging.ERROR)
    import tempfile

    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.priors or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name, outcomes, prior, wcol, scol in streams(folder, args.only):
            raw = config(outcomes.name, wcol, scol, prior)
            stream = priced(raw, outcomes, base_dir=folder)
            ref = reference(stream.subset(np.arange(len(stream))))
            log(f"{name}: {len(stream)} prompts; simulating {args.seeds} seeds x {min(args.limit, len(stream))} requests")
            t = time.perf_counter()
            sim = simulate(raw, outcomes, base_dir=folder, seeds=range(args.seeds), limit=args.limit,
                           judge_agreement=args.judge_agreement, floor=FLOOR, stream_name=name,
                           progress=lambda m: log(f"  {m}"))
            s = sim.summary()
            rows.append({"stream": name, "prompts": len(stream), "seconds": time.perf_counter() - t, **s,
                         "reference": ref, "runs": [r.summary(FLOOR) for r in sim.runs]})
            log(f"  {time.perf_counter() - t:.0f}s: coverage {s['floor_coverage']:.0%}, promoted {s['promoted_runs']}")
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
    print(f"\nLifecycle simulation, floor {FLOOR:.0%} of always-strong quality, {args.seeds} seeds, "
          f"up to {args.limit} requests each" + (f", judge agreement {args.judge_agreement}" if args.judge_agreement
                                                  else ", pairs scored from recorded quality"))
    head = (f"{'stream':<38}{'signal (APGR, 2-fold)':>24}{'coverage':>10}{'promoted':>10}{'pairs':>8}"
            f"{'shadow $':>10}{'savings':>9}{'ref savings':>12}{'cross-fit':>10}{'goal':>6}")
    print(head)
    for r in rows:
        sig = r["reference"]["signal"]
        pairs = r["median_pairs_to_promotion"]
        usd = r["median_shadow_usd_to_promotion"]
        sav = r["median_savings_after_promotion"]
        ref = r["reference"]["savings_at_floor"]
        if r["reference"]["has_signal"]:
            # Half the savings of the learner trained on the whole stream, out of sample (the cross-fit): its
            # in-sample figure is what a model scores on prompts it memorised, which no served router sees.
            ok = r["floor_coverage"] >= 0.95 and sav is not None and sav >= r["reference"]["cross_fit_savings_at_floor"] / 2
        else:
            ok = r["promoted_runs"] == 0
        print(f"{r['stream']:<38}{sig['apgr']:>9.3f} [{sig['low']:.3f}, {sig['high']:.3f}]"
              f"{r['floor_coverage']:>10.0%}{r['promoted_runs']:>7}/{r['seeds']:<2}"
              f"{'-' if pairs is None else f'{pairs:.0f}':>8}{'-' if usd is None else f'{usd:.3f}':>10}"
              f"{'-' if sav is None else f'{sav:.1%}':>9}{ref:>12.1%}"
              f"{r['reference']['cross_fit_savings_at_floor']:>10.1%}{'met' if ok else 'MISS':>6}")
    print("pairs, shadow $ and savings: medians over promoted seeds, at the first promotion and after it; "
          "ref savings: the learner trained on the whole stream, in-sample, at the floor; cross-fit: the same "
          "from a 2-fold cross-fit (out of sample); goal: coverage >= 95% and savings >= half the cross-fit's on "
          "streams with signal, no promotion on streams without.")
    print(f"total {time.perf_counter() - t0:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
