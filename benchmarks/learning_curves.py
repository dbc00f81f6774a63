"""Learning curves on transfer streams: from few pairs of a new traffic to a proven router.

Each stream is a target traffic with a prior from other outcomes:

- GSM8K with an MMLU prior; MMLU (every 5th subject, 12 of 57, for time) with a GSM8K prior: the
  RouteLLM pair (Mixtral-8x7B-Instruct weak, GPT-4-1106 strong). Held out: a fixed random 400
  (GSM8K) or 1,000 (MMLU) prompts; the rest is the stream.
- each RouterBench task (arc_challenge, mbpp, winograde) with a prior from the other two (both
  splits): strong gpt-4-1106-preview, weak mixtral-8x7b-chat (the cheapest model with a quality gap
  to GPT-4 on all three tasks: gpt-3.5-turbo-1106 ties GPT-4 on MBPP's test split, so there is no
  gap to recover there). The stream is the task's published train split, held out its test split.

For each seed the stream is shuffled; a router is trained on its first n pairs and scored on the
held-out pairs. Rows:

- `tfidf+ridge`: the plain baseline, TF-IDF word 1-2-grams + ridge regression on the gain
  (scikit-learn defaults, alpha 1), on the n pairs;
- `default`: the default learner, `stack` (`gearshift.lab.train.fit`: the logistic heads and a TF-IDF
  gain ridge, mixed by ranks with the weight a cross-validation on the n pairs chose);
- `logistic`: the previous default (two logistic heads, score (1 + p_strong - p_weak) / 2);
- `ridge`: the learner a prior warm-starts (`gearshift.lab.train.fit`: ridge on the gain over the hashed
  features), on the n pairs only;
- `prior only`: the ridge fitted on the prior outcomes, no target pairs;
- `prior+warm`: the ridge warm-started from that prior (`fit(..., prior=...)`), which is
  what `lab train --prior` and `lab retrain --prior` do.

Cells: mean APGR over seeds (the held-out 95% bootstrap interval of seed 0 is printed under each
table as its typical half-width). Under each table, the paired comparison of the default with the
baseline: their APGR difference on the same resamples of the held-out pairs (mean over seeds), with
its 95% interval: "better" or "worse" when the interval excludes 0, else "tie". Then, per row, the least n at which every seed's router is
proven on the held-out pairs (`lab.proof.prove_scores`: floor 95% of GPT-4's quality at 95%
confidence, APGR interval above random), the shadow dollars those n pairs cost (n x the mean
strong-model cost per prompt of the stream: a shadow pair pays the strong model's answer), and
the savings vs always-strong at the proven threshold on the proof's held-out part.

    GEARSHIFT_DATA=../shared/datasets python benchmarks/learning_curves.py [--quick] [--seeds 3]
        [--only gsm8k,mmlu,arc_challenge,mbpp,winograde] [--floor 0.95]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from gearshift.lab import metrics
from gearshift.lab.bootstrap import Estimate, estimate, resample_matrix
from gearshift.lab.proof import prove_scores
from gearshift.lab.replay import ScoreOrder, operating_point, sweep_scores
from gearshift.lab.signal import signal
from gearshift.lab.train import TrainSettings, fit, model_of, pair_scores
from gearshift.learned.artifact import Artifact
from gearshift.outcomes import datasets
from gearshift.outcomes.datasets import ROUTELLM_STRONG, ROUTELLM_WEAK
from gearshift.outcomes.table import Outcomes

RB_STRONG, RB_WEAK = "gpt-4-1106-preview", "mistralai/mixtral-8x7b-chat"
SIZES = (50, 100, 200, 400, 800, 1600)
QUICK_SIZES = (50, 200, 800)
ROWS = ("tfidf+ridge", "default", "logistic", "ridge", "prior only", "prior+warm")


@dataclass
class Stream:
    name: str
    prior: Outcomes
    pool: Outcomes
    test: Outcomes
    weak: str
    strong: str


def _pair(o: Outcomes, weak: str, strong: str) -> Outcomes:
    """Only the two models, only prompts where both have an answer."""
    o = o.select_models([weak, strong])
    return o.subset(~np.isnan(np.asarray(o.quality, float)).any(axis=1))


def _no_meta(o: Outcomes) -> Outcomes:
    """A new team's traffic carries no task header: text only, for target and prior alike."""
    return Outcomes(prompts=o.prompts, models=list(o.models), quality=o.quality, cost=o.cost, meta={},
                    name=o.name)


def streams(only: set[str] | None) -> Iterator[Stream]:
    def want(key: str) -> bool:
        return only is None or key in only

    if want("gsm8k") or want("mmlu"):
        gsm = _no_meta(datasets.load("routellm/gsm8k"))
        mmlu_all = datasets.load("routellm/mmlu")
        keep = sorted(set(mmlu_all.meta["subject"].tolist()))[::5]
        mmlu = _no_meta(mmlu_all.subset(np.isin(mmlu_all.meta["subject"], keep)))
        mmlu.name = f"routellm/mmlu ({len(keep)} subjects)"
        rng = np.random.default_rng(0)
        if want("gsm8k"):
            p = rng.permutation(len(gsm))
            yield Stream("gsm8k <- mmlu prior", mmlu, gsm.subset(p[400:]), gsm.subset(np.sort(p[:400])),
                         ROUTELLM_WEAK, ROUTELLM_STRONG)
        if want("mmlu"):
            p = np.random.default_rng(1).permutation(len(mmlu))
            yield Stream("mmlu <- gsm8k prior", gsm, mmlu.subset(p[1000:]), mmlu.subset(np.sort(p[:1000])),
                         ROUTELLM_WEAK, ROUTELLM_STRONG)
    rb = None
    for task in datasets.ROUTERBENCH_TASKS:
        if not want(task):
            continue
        if rb is None:
            rb = _pair(datasets.load("routerbench"), RB_WEAK, RB_STRONG)
        tgt = rb.subset(rb.meta["task"] == task)
        others = rb.subset(rb.meta["task"] != task)
        yield Stream(f"{task} <- other tasks prior", _no_meta(others), _no_meta(tgt.split("train")),
                     _no_meta(tgt.split("test")), RB_WEAK, RB_STRONG)


def _gain(o: Outcomes, weak: str, strong: str) -> np.ndarray:
    q = np.asarray(o.quality, float)
    return q[:, o.index(strong)] - q[:, o.index(weak)]


def tfidf_ridge(train: Outcomes, weak: str, strong: str) -> Callable[[Outcomes], np.ndarray]:
    """The plain baseline: TF-IDF word 1-2-grams + ridge regression on the gain (scikit-learn)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    vec = TfidfVectorizer(ngram_range=(1, 2))
    X = vec.fit_transform([str(p) for p in train.prompts])
    model = Ridge(alpha=1.0).fit(X, _gain(train, weak, strong))
    return lambda o: np.asarray(model.predict(vec.transform([str(p) for p in o.prompts])), float)


def artifact_scorer(a: Artifact) -> Callable[[Outcomes], np.ndarray]:
    model = model_of(a)
    return lambda o: pair_scores(model, o)


@dataclass
class Cell:
    apgr: list[float] = field(default_factory=list)
    proven: list[bool] = field(default_factory=list)
    savings: list[float] = field(default_factory=list)
    interval: tuple[float, float] | None = None
    weights: list[float] = field(default_factory=list)  # the default's weight of its logistic heads, per seed
    # The APGR on each of the same resamples of the held-out pairs, per seed (default and baseline rows only):
    # their difference is the paired comparison of the two learners.
    boot: list[np.ndarray] = field(default_factory=list)


def run_stream(st: Stream, sizes: tuple[int, ...], seeds: int, floor: float, n_boot: int) -> dict[str, dict[int, Cell]]:
    w, s = st.weak, st.strong
    ridge, logistic = TrainSettings(weak=w, strong=s, learner="ridge"), TrainSettings(weak=w, strong=s, learner="logistic")
    settings_of = {"default": TrainSettings(weak=w, strong=s), "logistic": logistic, "ridge": ridge, "prior+warm": ridge}
    prior = fit(st.prior, ridge)
    ns = sorted({min(n, len(st.pool)) for n in sizes} | {len(st.pool)})
    table: dict[str, dict[int, Cell]] = {r: {n: Cell() for n in ns} for r in ROWS}
    prior_scores = artifact_scorer(prior)(st.test)
    counts = resample_matrix(len(st.test), n_boot, seed=0)  # one set of resamples: the comparison is paired
    for seed in range(seeds):
        order = np.random.default_rng(100 + seed).permutation(len(st.pool))
        for n in ns:
            train = st.pool.subset(order[:n])
            for row in ROWS:
                if row == "tfidf+ridge":
                    sc = tfidf_ridge(train, w, s)(st.test)
                elif row == "prior only":
                    sc = prior_scores
                else:
                    a = fit(train, settings_of[row], prior=prior if row == "prior+warm" else None)
                    if row == "default":
                        table[row][n].weights.append(float(a.header["score"]["weight"]))
                    sc = artifact_scorer(a)(st.test)
                cell = table[row][n]
                cell.apgr.append(float(metrics.apgr(sweep_scores(sc, st.test, w, s))))
                if row in PAIRED:
                    cell.boot.append(np.asarray(metrics.apgr(ScoreOrder.from_scores(sc).curve(
                        st.test, w, s, weights=counts)), dtype=float))
                proof = prove_scores(sc, st.test, w, s, floor, min_pairs=0, n_boot=n_boot, seed=seed, held_out=HELD_OUT)
                cell.proven.append(proof.ok)
                if proof.ok and proof.threshold is not None:
                    _, rows_test = _proof_rows(len(st.test), seed)
                    held = st.test.subset(rows_test)
                    pt = operating_point(sc[rows_test], held, w, s, proof.threshold)
                    cell.savings.append(float(metrics.savings(pt.cost, float(np.nanmean(held.cost[:, held.index(s)])))))
                if seed == 0:
                    sig = signal(sc, st.test, w, s, n_boot=n_boot)
                    cell.interval = (sig.apgr.low, sig.apgr.high)
    return table


HELD_OUT = 0.3  # the proof keeps a part apart here, to price the proven threshold on pairs it was not fitted on


PAIRED = ("default", "tfidf+ridge")


def paired_difference(default: Cell, baseline: Cell) -> Estimate:
    """The default's APGR minus the baseline's, mean over seeds, with the 95% interval of the same
    resamples of the held-out pairs for both (the held-out set's noise, paired; seeds averaged)."""
    diff = np.mean([d - b for d, b in zip(default.boot, baseline.boot, strict=True)], axis=0)
    ok = diff[np.isfinite(diff)]
    return estimate(float(np.mean(default.apgr) - np.mean(baseline.apgr)), ok)


def _proof_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from gearshift.lab.calibrate import split_rows

    return split_rows(n, seed=seed, fraction=1 - HELD_OUT)  # the proof's split: savings on its held-out part


def report(st: Stream, table: dict[str, dict[int, Cell]], out: Callable[[str], None]) -> None:
    ns = sorted(next(iter(table.values())))
    stream_cost = float(np.nanmean(st.pool.cost[:, st.pool.index(st.strong)]))
    out(f"\n## {st.name}: stream {len(st.pool)} pairs ({st.pool.name}), held out {len(st.test)}, prior "
        f"{len(st.prior)} ({st.prior.name}); weak {st.weak}, strong {st.strong}")
    head = "| learner | " + " | ".join(f"n={n}" for n in ns) + " | pairs until proven | shadow $ | savings at floor |"
    out(head)
    out("|" + "---|" * (len(ns) + 4))
    base = {n: float(np.mean(table["tfidf+ridge"][n].apgr)) for n in ns}
    for row, cells in table.items():
        vals = []
        for n in ns:
            v = float(np.mean(cells[n].apgr))
            mark = "" if row == "tfidf+ridge" else ("+" if v > base[n] else "-")
            vals.append(f"{v:.3f}{mark}")
        proven = next((n for n in ns if cells[n].proven and all(cells[n].proven)), None)
        if proven is None:
            tail = "not proven | - | -"
        else:
            sv = cells[proven].savings
            n_pairs = 0 if row == "prior only" else proven
            tail = f"{n_pairs} | {n_pairs * stream_cost:.2f} | {np.mean(sv):.1%}"
        out(f"| {row} | " + " | ".join(vals) + f" | {tail} |")
    half = [np.mean([(c.interval[1] - c.interval[0]) / 2 for c in cells.values() if c.interval])
            for cells in table.values()]
    out(f"(+/- = above/below tfidf+ridge; seed 0's 95% APGR interval on the held-out pairs is about "
        f"+/-{np.mean(half):.3f} wide)")
    for row in ("default", "tfidf+ridge"):
        out(f"{row}, seed 0 with its 95% interval: " + "; ".join(
            f"n={n} {table[row][n].apgr[0]:.3f} [{table[row][n].interval[0]:.3f}, {table[row][n].interval[1]:.3f}]"  # type: ignore[index]
            for n in ns if table[row][n].interval))
    diffs = {n: paired_difference(table["default"][n], table["tfidf+ridge"][n]) for n in ns}
    verdict = {n: "worse" if d.high < 0 else "better" if d.low > 0 else "tie" for n, d in diffs.items()}
    out("default - tfidf+ridge, paired (same held-out resamples, mean over seeds), 95% interval: " + "; ".join(
        f"n={n} {d.value:+.3f} [{d.low:+.3f}, {d.high:+.3f}] {verdict[n]}" for n, d in diffs.items()))
    out("default's weight of the logistic heads (mean over seeds): " + "; ".join(
        f"n={n} {np.mean(table['default'][n].weights):.2f}" for n in ns))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES} and 2 seeds")
    ap.add_argument("--seeds", type=int, default=None, help="stream shuffles (default 3; 2 with --quick)")
    ap.add_argument("--only", default=None, help="comma-separated: gsm8k, mmlu, arc_challenge, mbpp, winograde")
    ap.add_argument("--floor", type=float, default=0.95, help="quality floor of the proof (share of always-strong)")
    ap.add_argument("--resamples", type=int, default=200, help="bootstrap resamples of the proof and interval")
    args = ap.parse_args()
    # Bootstrap resamples with no quality gap have no PGR (NaN); the intervals skip them.
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="gearshift.lab.metrics")
    sizes = QUICK_SIZES if args.quick else SIZES
    seeds = args.seeds or (2 if args.quick else 3)
    only = set(args.only.split(",")) if args.only else None
    print(f"# learning curves: mean APGR over {seeds} seeds; sizes {sizes} + all; floor {args.floor:.0%}")
    for st in streams(only):
        t0 = time.time()
        table = run_stream(st, sizes, seeds, args.floor, args.resamples)
        report(st, table, print)
        print(f"({time.time() - t0:.0f} s)")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
