"""The classifier router on real RouteLLM data: train, save, load, serve, refuse bad artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from gearshift.errors import ConfigError
from gearshift.lab import metrics
from gearshift.lab.replay import requests, sweep, sweep_scores
from gearshift.lab.train import TrainSettings, fit, model_of, pair_scores
from gearshift.learned import artifact
from gearshift.learned.artifact import ArtifactError
from gearshift.learned.features import FeatureSpec, Featurizer
from gearshift.outcomes import datasets
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W
from gearshift.outcomes.table import Outcomes
from gearshift.plan import build_routers
from gearshift.request import ChatRequest
from gearshift.routers.classifier import ClassifierRouter
from tests.support.configs import parse_config

TRAIN, TEST = 2500, 1500
# Smaller hash spaces than the defaults keep the tests fast; the code path is the same.
SMALL = FeatureSpec(word_bits=15, char_bits=15, cross_bits=15, metadata_keys=("task",), cross_key="task")


@pytest.fixture(scope="module")
def mmlu_split(data_dir: Path) -> tuple[Outcomes, Outcomes]:
    o = datasets.load("routellm/mmlu", drop_contaminated=True)
    perm = np.random.default_rng(7).permutation(len(o))
    return o.subset(np.sort(perm[:TRAIN])), o.subset(np.sort(perm[TRAIN:TRAIN + TEST]))


@pytest.fixture(scope="module")
def trained(mmlu_split: tuple[Outcomes, Outcomes]) -> artifact.Artifact:
    train, _ = mmlu_split
    return fit(train, TrainSettings(features=SMALL))


@pytest.fixture(scope="module")
def saved(trained: artifact.Artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return artifact.save(trained, tmp_path_factory.mktemp("art") / "router.json")


def pair_config(tmp: Path, artifact_path: str, **router: object) -> object:
    data = {
        "models": {
            "mixtral": {"provider": "replay", "replay": {"dataset": "routellm/mmlu", "column": W},
                        "price": {"input": 0.6, "output": 0.6}, "rank": 1},
            "gpt-4": {"provider": "replay", "replay": {"dataset": "routellm/mmlu", "column": S},
                      "price": {"input": 10, "output": 30}, "rank": 10},
        },
        "routers": {"smart": {"kind": "classifier", "artifact": artifact_path, **router}},
    }
    return parse_config(data, base_dir=tmp)


def test_trained_router_beats_random_on_held_out_prompts(trained: artifact.Artifact,
                                                         mmlu_split: tuple[Outcomes, Outcomes]) -> None:
    _, test = mmlu_split
    model = model_of(trained)
    curve = sweep_scores(pair_scores(model, test), test, W, S)
    random = metrics.expected_random_curve(test, W, S)
    assert metrics.apgr(random) == pytest.approx(0.5)
    # 2,500 training prompts already recover the quality gap much faster than chance.
    assert metrics.apgr(curve) > 0.58
    assert metrics.cpt(curve, 0.5) < 0.40
    # The metadata (MMLU subject) and the training fingerprint are recorded.
    h = trained.header
    assert h["features"]["spec"]["metadata_keys"] == ["task"]
    assert h["training"]["fingerprint"].startswith("sha256:") and h["training"]["prompts"] == TRAIN


def test_gain_target_beats_weak_failure_target(mmlu_split: tuple[Outcomes, Outcomes],
                                               trained: artifact.Artifact) -> None:
    train, test = mmlu_split
    fails = model_of(fit(train, TrainSettings(target="weak-fails", features=SMALL)))
    gain_apgr = metrics.apgr(sweep_scores(pair_scores(model_of(trained), test), test, W, S))
    fail_apgr = metrics.apgr(sweep_scores(pair_scores(fails, test), test, W, S))
    assert gain_apgr > fail_apgr


def test_save_load_round_trip_gives_identical_scores(trained: artifact.Artifact, saved: Path, tmp_path: Path,
                                                     mmlu_split: tuple[Outcomes, Outcomes]) -> None:
    _, test = mmlu_split
    test = test.subset(np.arange(300))
    before = pair_scores(model_of(trained), test)
    loaded = artifact.load(saved)
    assert loaded.digest() == trained.digest()
    assert np.array_equal(pair_scores(model_of(loaded), test), before)
    # Through the config, as the gateway builds it: replay columns map the artifact's models.
    router = build_routers(pair_config(saved.parent, saved.name, threshold=0.55))["smart"]
    assert isinstance(router, ClassifierRouter)
    assert (router.weak, router.strong, router.threshold) == ("mixtral", "gpt-4", 0.55)
    reqs = requests(test)
    batch = router.scores(reqs)
    assert np.array_equal(batch, before)
    one_by_one = np.array([router.score(r) for r in reqs])
    np.testing.assert_allclose(one_by_one, batch, rtol=0, atol=1e-12)
    for r, s in zip(reqs[:50], batch[:50], strict=True):
        route = router.route(r)
        assert route.primary == ("gpt-4" if s >= 0.55 else "mixtral")
        assert route.reason.startswith("classifier: score")
    # The lab's sweep over the configured router is the offline curve of the same scores.
    curve = sweep(router, test, columns={"mixtral": W, "gpt-4": S})
    assert metrics.apgr(curve) == pytest.approx(metrics.apgr(sweep_scores(before, test, W, S)))


def test_corrupt_or_foreign_artifacts_are_refused(saved: Path, tmp_path: Path) -> None:
    doc = json.loads(saved.read_text())

    def refused(content: str | bytes, match: str) -> None:
        p = tmp_path / "bad.json"
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ArtifactError, match=match):
            artifact.load(p)

    refused(b"\x80\x04\x95pickle", "not JSON")
    refused(saved.read_text()[: len(saved.read_text()) // 2], "not JSON")
    refused(json.dumps({"weights": [1, 2, 3]}), "not a gearshift router artifact")
    refused(json.dumps({**doc, "format": "onnx"}), "not a gearshift router artifact")
    refused(json.dumps({**doc, "version": 99}), "newer than this gearshift reads")
    # One weight changed: the checksum no longer matches.
    W_ = artifact.load(saved).arrays["W"].copy()
    W_[np.flatnonzero(W_[:, 0])[0], 0] += 1.0
    tampered = dict(doc, arrays={**doc["arrays"], "W": artifact._encode(W_)})
    refused(json.dumps(tampered), "checksum mismatch")
    # Bytes of the data damaged: it no longer decodes.
    data = doc["arrays"]["W"]["data"]
    broken = dict(doc, arrays={**doc["arrays"], "W": {**doc["arrays"]["W"], "data": data[:100] + "!!" + data[102:]}})
    refused(json.dumps(broken), "corrupt")
    with pytest.raises(ArtifactError, match="does not exist"):
        artifact.load(tmp_path / "missing.json")
    # In a config, the error names the router's key and the file.
    (tmp_path / "foreign.json").write_text(json.dumps({"hello": "world"}))
    with pytest.raises(ConfigError, match=r"routers\.smart\.artifact.*not a gearshift router artifact"):
        pair_config(tmp_path, "foreign.json")


def test_config_names_models_missing_from_config(saved: Path) -> None:
    data = {"models": {"a": {"provider": "openai", "price": {"input": 1, "output": 1}}},
            "routers": {"smart": {"kind": "classifier", "artifact": str(saved)}}}
    with pytest.raises(ConfigError, match=r"routers\.smart\.models\.gpt-4-1106-preview"):
        parse_config(data)
    # An explicit mapping fixes it; a multi-form option on a pair artifact does not.
    ok = dict(data, models={"a": data["models"]["a"], "b": data["models"]["a"]},
              routers={"smart": {"kind": "classifier", "artifact": str(saved), "models": {W: "a", S: "b"}}})
    router = build_routers(parse_config(ok))["smart"]
    assert (router.weak, router.strong) == ("a", "b")
    bad = dict(ok, routers={"smart": {**ok["routers"]["smart"], "target": 0.8}})
    with pytest.raises(ConfigError, match="two-model router"):
        parse_config(bad)
    priced = dict(ok, routers={"smart": {**ok["routers"]["smart"], "costs": {"a": 0.001}}})
    with pytest.raises(ConfigError, match=r"routers\.smart\.costs.*routes by `threshold`"):
        parse_config(priced)


def test_features_are_stable_across_processes_and_bounded() -> None:
    fz = Featurizer(FeatureSpec(metadata_keys=("task",), cross_key="task"))
    reqs = [ChatRequest.from_prompt("What is 2+2?\nA. 3\nB. 4", {"task": "math"}),
            ChatRequest.from_prompt("Name the capital of France.", {"task": "geo"})]
    fz.fit(reqs)
    idx, val = fz.row(reqs[0])
    assert idx.max() < fz.dim and np.all(np.isfinite(val))
    # crc32 and fixed constants, not Python's salted hash(): another process hashes the same way.
    code = ("from gearshift.learned.features import *; from gearshift.request import ChatRequest;"
            "fz=Featurizer(FeatureSpec(metadata_keys=('task',), cross_key='task'));"
            "r=[ChatRequest.from_prompt('What is 2+2?\\nA. 3\\nB. 4', {'task': 'math'}),"
            "ChatRequest.from_prompt('Name the capital of France.', {'task': 'geo'})];fz.fit(r);"
            "print(list(map(int, fz.row(r[0])[0])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""}).stdout
    assert json.loads(out) == idx.tolist()
    # An unseen metadata value and an empty request still featurize.
    i2, _ = fz.row(ChatRequest.from_prompt("", {"task": "unseen"}))
    assert i2.size > 0
    # A huge prompt is cut to its tail for n-grams.
    big = ChatRequest.from_prompt("word " * 200_000 + "the question")
    ib, _ = fz.row(big)
    assert ib.size < 20_000


def test_serving_imports_no_sklearn(saved: Path) -> None:
    code = ("import sys; from gearshift.learned.classifier import Model; from gearshift.request import ChatRequest;"
            f"m=Model.load({str(saved)!r}); p=m.predict(ChatRequest.from_prompt('hi', {{'task': 'anatomy'}}));"
            "print(float(m.pair_score(p)), 'sklearn' in sys.modules, 'scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert 0.0 <= float(out[0]) <= 1.0
    assert out[1:] == ["False", "False"]


def test_multi_form_on_routerbench(tmp_path: Path, data_dir: Path) -> None:
    o = datasets.load("routerbench/mbpp")
    train, test = o.split("train"), o.split("test")
    five = ("mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat", "gpt-3.5-turbo-1106", "claude-v2",
            "gpt-4-1106-preview")
    a = fit(train, TrainSettings(form="multi", models=five, features=FeatureSpec(word_bits=14, char_bits=14)))
    path = artifact.save(a, tmp_path / "multi.json")
    prices = {"price": {"input": 1, "output": 1}}
    models = {m: {"provider": "replay", "replay": {"dataset": "routerbench/mbpp", "column": m}, **prices}
              for m in five}

    def router(**opts: object):  # type: ignore[no-untyped-def]
        cfg = parse_config(yaml.safe_load(yaml.safe_dump(
            {"models": models, "routers": {"r": {"kind": "classifier", "artifact": path.name, **opts}}})),
            base_dir=tmp_path)
        return build_routers(cfg)["r"]

    reqs = requests(test)[:40]
    cheapest = min(a.header["costs"], key=a.header["costs"].get)
    assert set(router(**{"lambda": 1e9}).routes(reqs)) == {cheapest}
    assert set(router(target=0.0).routes(reqs)) == {cheapest}
    best = router(**{"lambda": 0.0})
    p = best.model.predict_many(reqs)
    assert best.routes(reqs) == [best.names[k] for k in p.argmax(axis=1)]
    route = router(target=0.6).route(reqs[0])
    assert route.primary in five and "classifier:" in route.reason
    # Today's prices in the config replace the training data's mean costs: GPT-4 made free, it wins.
    free_gpt4 = {m: 0.0 if m == "gpt-4-1106-preview" else 0.01 for m in five}
    assert set(router(costs=free_gpt4, **{"lambda": 1e9}).routes(reqs)) == {"gpt-4-1106-preview"}
    assert router(costs=free_gpt4, target=0.0).models()[0] == "gpt-4-1106-preview"
    with pytest.raises(ConfigError, match=r"costs\.gpt-5.*one of this router's models"):
        router(costs={"gpt-5": 0.1}, target=0.5)
    with pytest.raises(ConfigError, match=r"costs\.claude-v2.*>= 0"):
        router(costs={"claude-v2": -1.0}, target=0.5)
    with pytest.raises(ConfigError, match="exactly one of `target`"):
        router()
    with pytest.raises(ConfigError, match="no threshold"):
        router(threshold=0.5, target=0.5)
