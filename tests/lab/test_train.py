"""The learners (the default stack, the ridge on the gain, the logistic heads) and the ridge's warm start
from a prior artifact."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from gearshift.lab.signal import signal
from gearshift.lab.train import (
    STACK_FOLDS,
    STACK_MIN_PAIRS,
    STACK_SHRINK,
    TrainSettings,
    cross_fit_scores,
    fit,
    fold_of,
    model_of,
    pair_scores,
    prior_weight,
    stack_weight,
)
from gearshift.learned import artifact
from gearshift.learned.classifier import Model, Ranks
from gearshift.learned.features import IDF_ARRAY, FeatureSpec, Featurizer
from gearshift.outcomes import datasets
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W
from gearshift.outcomes.table import Outcomes
from gearshift.request import ChatRequest

SMALL = FeatureSpec(word_bits=14)
ROOT = Path(__file__).resolve().parents[2]


def table(prompts: list[str], gain: np.ndarray, name: str = "synthetic") -> Outcomes:
    """Two models, weak right half the time, strong right when the gain says so."""
    n = len(prompts)
    weak = np.where(gain < 0, 1.0, np.where(gain > 0, 0.0, np.arange(n) % 2))
    strong = weak + gain
    return Outcomes(prompts=np.array(prompts, dtype=object), models=["weak", "strong"],
                    quality=np.stack([weak, strong], axis=1).astype(float), cost=np.tile([0.1, 1.0], (n, 1)), name=name)


def cue_table(n: int, cues: tuple[str, ...], seed: int) -> Outcomes:
    """Prompts of filler words; the strong model gains exactly on prompts holding one of `cues`."""
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", *[f"w{i}" for i in range(40)]]
    prompts = [" ".join(rng.choice(words, size=8)) for _ in range(n)]
    gain = np.array([1.0 if any(c in p.split() for c in cues) else 0.0 for p in prompts])
    return table(prompts, gain)


def score(model: Model, text: str) -> float:
    return float(model.pair_score(model.predict(ChatRequest(body={"messages": [{"role": "user", "content": text}]}))))


def test_cross_fit_scores_each_prompt_by_a_model_fitted_on_the_other_folds() -> None:
    o = cue_table(60, ("alpha",), seed=4)
    s = TrainSettings(learner="ridge")
    scores = cross_fit_scores(o, s, folds=3, seed=5)
    fold = fold_of(60, 3, seed=5)
    assert sorted(np.bincount(fold)) == [20, 20, 20]
    held = np.flatnonzero(fold == 1)
    alone = pair_scores(model_of(fit(o.subset(np.flatnonzero(fold != 1)), s)), o.subset(held))
    assert np.allclose(scores[held], alone)
    # The cue is learned from the other folds: prompts holding it score above the rest, out of fold.
    gain = o.quality[:, 1] - o.quality[:, 0]
    assert scores[gain > 0].mean() > scores[gain == 0].mean()
    with pytest.raises(ValueError, match="at least 2"):
        cross_fit_scores(o, s, folds=1)


def test_the_ridge_learner_is_one_gain_head_that_round_trips_and_serves(tmp_path: Path) -> None:
    o = cue_table(300, ("alpha",), seed=0)
    a = fit(o, TrainSettings(features=SMALL, learner="ridge"))
    assert a.header["score"]["rule"] == "predicted-gain"
    assert [h["link"] for h in a.header["heads"]] == ["identity"]
    loaded = Model.load(artifact.save(a, tmp_path / "r.json"))
    assert np.allclose(pair_scores(loaded, o), pair_scores(model_of(a), o), atol=1e-6)
    assert score(loaded, "alpha w1 w2 w3") > 0.7 > 0.55 > score(loaded, "w1 w2 w3 w4")


def test_the_logistic_learner_has_a_head_per_model_and_serves(tmp_path: Path) -> None:
    o = cue_table(300, ("alpha",), seed=0)
    a = fit(o, TrainSettings(features=SMALL, learner="logistic"))
    assert a.header["score"]["rule"] == "gain" and len(a.header["heads"]) == 2
    loaded = Model.load(artifact.save(a, tmp_path / "old.json"))
    assert score(loaded, "alpha w1 w2") > score(loaded, "w1 w2 w3")


def test_an_unknown_link_is_refused_with_the_fix(tmp_path: Path) -> None:
    a = fit(cue_table(100, ("alpha",), seed=0), TrainSettings(features=SMALL, learner="ridge"))
    a.header["heads"][0]["link"] = "probit"
    with pytest.raises(artifact.ArtifactError, match="retrain"):
        Model.load(artifact.save(a, tmp_path / "bad.json"))


def test_the_prior_weight_keeps_a_prior_that_predicts_and_drops_one_that_does_not() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(float)
    good = y + rng.normal(0, 0.1, 400)
    assert prior_weight(good, y) > 0.5
    assert prior_weight(-good, y) == 0.0
    assert prior_weight(rng.normal(size=400), y) < 0.1
    assert prior_weight(good[:5], y[:5]) == 1.0  # too few pairs to judge: trust the prior


def test_warm_start_moves_from_the_prior_toward_the_target_as_pairs_grow() -> None:
    # The prior learnt that `alpha` or `beta` prompts need the strong model; on the target only
    # `alpha` does. With few target pairs the warm start still follows the prior on `beta`; with
    # many it has learnt the target's own answer.
    prior = fit(cue_table(600, ("alpha", "beta"), seed=1), TrainSettings(features=SMALL, learner="ridge"))
    target = cue_table(800, ("alpha",), seed=2)

    def beta_lift(n: int) -> float:
        m = model_of(fit(target.subset(np.arange(n)), TrainSettings(features=SMALL, learner="ridge"), prior=prior))
        return score(m, "beta w1 w2 w3 w4 w5") - score(m, "w6 w1 w2 w3 w4 w5")

    few, many = beta_lift(30), beta_lift(800)
    assert few > 0.1
    assert many < few / 2
    warm = fit(target.subset(np.arange(30)), TrainSettings(features=SMALL, learner="ridge"), prior=prior)
    assert warm.header["training"]["prior"]["weight"] > 0


def test_a_prior_must_come_from_the_ridge_learner() -> None:
    o = cue_table(100, ("alpha",), seed=0)
    old = fit(o, TrainSettings(features=SMALL, learner="logistic"))
    with pytest.raises(ValueError, match="ridge learner"):
        fit(o, TrainSettings(features=SMALL, learner="ridge"), prior=old)


def test_the_learner_has_signal_on_a_few_hundred_real_pairs(data_dir: Path) -> None:
    g = datasets.load("routellm/gsm8k")
    perm = np.random.default_rng(3).permutation(len(g))
    train, test = g.subset(np.sort(perm[:700])), g.subset(np.sort(perm[700:]))
    sig = signal(pair_scores(model_of(fit(train, TrainSettings(weak=W, strong=S))), test), test, W, S)
    assert sig.has_signal, sig.figures()


def test_the_learning_curve_benchmark_has_the_baseline_row(data_dir: Path) -> None:
    spec = importlib.util.spec_from_file_location("learning_curves", ROOT / "benchmarks" / "learning_curves.py")
    assert spec is not None and spec.loader is not None
    lc = importlib.util.module_from_spec(spec)
    sys.modules["learning_curves"] = lc
    spec.loader.exec_module(lc)
    g = lc._no_meta(datasets.load("routellm/gsm8k"))
    st = lc.Stream("gsm8k small", g.subset(np.arange(0, 300)), g.subset(np.arange(300, 420)),
                   g.subset(np.arange(420, 620)), W, S)
    out = io.StringIO()
    lc.report(st, lc.run_stream(st, (60,), seeds=1, floor=0.9, n_boot=20), lambda line: print(line, file=out))
    rows = [line.split("|")[1].strip() for line in out.getvalue().splitlines() if line.startswith("| ")]
    assert rows[1:] == ["tfidf+ridge", "default", "logistic", "ridge", "prior only", "prior+warm"]
    # The paired comparison: the default's APGR minus the baseline's (as in the table), its interval, a verdict.
    cells = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in out.getvalue().splitlines()
             if line.startswith("| ")}
    paired = next(line for line in out.getvalue().splitlines() if line.startswith("default - tfidf+ridge, paired"))
    m = re.search(r"n=60 ([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\] (better|worse|tie)", paired)
    assert m is not None, paired
    value, low, high = (float(m.group(i)) for i in (1, 2, 3))
    assert value == pytest.approx(float(cells["default"][:5]) - float(cells["tfidf+ridge"][:5]), abs=2e-3)
    assert low <= high and m.group(4) == ("worse" if high < 0 else "better" if low > 0 else "tie")


def test_the_default_stack_has_both_candidates_round_trips_and_serves(tmp_path: Path) -> None:
    o = cue_table(300, ("alpha",), seed=0)
    a = fit(o, TrainSettings(features=SMALL))
    rule = a.header["score"]
    assert rule["rule"] == "stack" and [h["link"] for h in a.header["heads"]] == ["logistic", "logistic", "identity"]
    assert 0.0 <= rule["weight"] <= 1.0 and rule["cv"]["folds"] == STACK_FOLDS
    loaded = Model.load(artifact.save(a, tmp_path / "stack.json"))
    assert np.array_equal(pair_scores(loaded, o), pair_scores(model_of(a), o))
    assert score(loaded, "alpha w1 w2 w3") > 0.7 > 0.3 > score(loaded, "w1 w2 w3 w4")


def test_the_stack_weighs_the_candidate_that_predicts_out_of_fold_and_shrinks_with_few_pairs() -> None:
    # One candidate sees the cue, the other noise: the cross-validation gives the first all the weight,
    # and the weight stored is that pulled toward the baseline (0) by the larger of n / (n + STACK_SHRINK)
    # and the evidence 1 - 1/t^2.
    rng = np.random.default_rng(0)

    def stacked(n: int, cue_in_heads: bool) -> dict[str, Any]:
        o = cue_table(n, ("alpha",), seed=n)
        cue = np.array([[1.0 if "alpha" in p.split() else 0.0] for p in o.prompts])
        noise = rng.random((n, 20))
        good, bad = sp.csr_matrix(np.hstack([cue, noise[:, :5]])), sp.csr_matrix(noise)
        Xh, Xg = (good, bad) if cue_in_heads else (bad, good)
        return stack_weight(o, Xh, Xg, "weak", "strong", TrainSettings(c_strong=100.0, c_weak=100.0, alpha=0.01))

    for n in (60, 600):
        heads, ridge = stacked(n, cue_in_heads=True), stacked(n, cue_in_heads=False)
        assert heads["cv"]["best"] == 1.0 and heads["cv"]["t"] > 1
        assert heads["weight"] == pytest.approx(max(n / (n + STACK_SHRINK), 1 - 1 / heads["cv"]["t"] ** 2))
        assert (ridge["cv"]["best"], ridge["weight"]) == (0.0, 0.0)
    o = cue_table(STACK_MIN_PAIRS - 1, ("alpha",), seed=0)
    few = stack_weight(o, sp.csr_matrix(np.ones((len(o), 1))), sp.csr_matrix(np.ones((len(o), 1))), "weak", "strong",
                       TrainSettings())
    assert few["weight"] == 0.0 and few["cv"]["folds"] == 1  # too few pairs to cross-validate: the baseline


def test_ranks_are_the_quantiles_interpolated_and_one_request_ranks_as_a_batch() -> None:
    r = Ranks([0.0, 1.0, 1.0, 2.0])  # levels 0, 1/3, 2/3, 1; the tie at 1 keeps its highest level
    assert [r.one(x) for x in (-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0)] == pytest.approx([0, 0, 1 / 3, 2 / 3, 5 / 6, 1, 1])
    x = np.random.default_rng(0).normal(size=200)
    r = Ranks(np.quantile(x[:50], np.linspace(0, 1, 21)))
    np.testing.assert_allclose(r(x), [r.one(float(v)) for v in x], rtol=0, atol=1e-12)
    with pytest.raises(artifact.ArtifactError, match="non-decreasing"):
        Ranks([1.0, 0.0])


def test_the_tfidf_block_is_scikit_learns_tfidf_up_to_hashing() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = ["the cat sat on the mat", "the dog ate my homework", "a cat and a dog", "my cat is on the mat"]
    reqs = [ChatRequest(body={"messages": [{"role": "user", "content": d}]}) for d in docs]
    fz = Featurizer(FeatureSpec(tfidf_bits=20)).fit(reqs)
    data, indices, indptr = fz.transform(reqs + [ChatRequest(body={"messages": [{"role": "user", "content": "cat zebra"}]})])
    ref = TfidfVectorizer(ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b").fit(docs)
    want = ref.transform([*docs, "cat zebra"])
    for k in range(len(docs) + 1):
        row = slice(indptr[k], indptr[k + 1])
        ours = np.sort(data[row][indices[row] >= fz.tfidf_offset])
        assert np.allclose(ours, np.sort(want[k].data)), k  # "zebra" was never seen: no weight, as a vocabulary


def test_older_artifacts_load_and_a_stack_without_its_idf_is_refused(tmp_path: Path) -> None:
    o = cue_table(120, ("alpha",), seed=0)
    old = fit(o, TrainSettings(features=SMALL, learner="logistic"))
    path = artifact.save(old, tmp_path / "v1.json")
    doc = json.loads(path.read_text())
    assert "tfidf_bits" in doc["features"]["spec"]
    del doc["features"]["spec"]["tfidf_bits"]  # as version 1 wrote it
    path.write_text(json.dumps({**doc, "version": 1}))
    assert np.array_equal(pair_scores(Model.load(path), o), pair_scores(model_of(old), o))
    stack = fit(o, TrainSettings(features=SMALL))
    broken = artifact.Artifact(stack.header, {k: v for k, v in stack.arrays.items() if k != IDF_ARRAY})
    with pytest.raises(artifact.ArtifactError, match="retrain"):
        Model.load(artifact.save(broken, tmp_path / "no-idf.json"))
