"""Retraining a classifier router on the gateway's own shadow pairs, and the gateway switching to it.

The served router was trained on MMLU (another task); live traffic is GSM8K replayed from the real
recorded answers of Mixtral-8x7B and GPT-4-1106, shadowed so that every request leaves a scored pair.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openai
import pytest

from gearshift.cli.ops import pairs_line
from gearshift.config import load_config
from gearshift.gateway.server import running
from gearshift.lab.recalibrate import collect_pairs, recalibrate, scoring_router
from gearshift.lab.replay import requests
from gearshift.lab.retrain import retrain
from gearshift.lab.train import TrainSettings, fit
from gearshift.learned import artifact
from gearshift.learned.classifier import Model
from gearshift.outcomes.datasets import load
from gearshift.store import open_store
from tests.support.gateway_helpers import promote_and_wait, replay_config_file, send, settle


@pytest.fixture
def config_path(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GEARSHIFT_DATA", str(data_dir))
    mmlu = load("routellm/mmlu", drop_contaminated=True)
    sample = mmlu.subset(np.sort(np.random.default_rng(0).choice(len(mmlu), 1500, replace=False)))
    artifact.save(fit(sample, TrainSettings()), tmp_path / "router.json")
    return replay_config_file(tmp_path, {
        "gearshift/smart": {"kind": "classifier", "artifact": "router.json", "threshold": 0.5,
                            "shadow": {"rate": 1.0, "compare": "final_answer", "explore": "mixtral-8x7b"}},
        "gearshift/strong": {"kind": "fixed", "model": "gpt-4-1106"},
    })


def test_retrain_on_shadow_pairs_then_promote_switches_the_running_gateway(config_path: Path) -> None:
    config = load_config(config_path)
    gsm8k = load("routellm/gsm8k")
    prompts = list(gsm8k.prompts[:600])
    with running(config) as gw:
        send(gw, prompts, "gearshift/smart")
        settle(gw)
        store = gw.gateway.store
        router = gw.gateway.routers["gearshift/smart"]
        served = router.model
        r = retrain(config, store, "gearshift/smart", floor=0.9, min_pairs=200)
        assert (r.version, r.pairs, r.train_pairs, r.check_pairs, r.promoted) == (1, 600, 420, 180, False)
        # Written beside the served artifact, stored relative to the config, loadable, for the config's models.
        assert r.artifact.parent == config_path.parent and r.artifact.name.startswith("router.retrained-")
        version = store.router_versions("gearshift/smart")[0]
        assert version["settings"] == {"threshold": r.calibration.threshold, "artifact": r.artifact.name}
        assert version["metrics"]["apgr"] == r.apgr_new and version["metrics"]["apgr_served"] == r.apgr_served
        new = Model.load(r.artifact)
        assert new.models == ["mixtral-8x7b", "gpt-4-1106"] and new.default_threshold == r.calibration.threshold
        # Trained on this traffic, it routes it better than random on pairs it never saw.
        assert r.apgr_new > 0.5
        assert r.calibration.bound is not None and r.calibration.bound >= 0.9
        time.sleep(0.3)
        assert router.model is served  # stored, not applied
        promote_and_wait(config_path, "gearshift/smart", 1, lambda: router.model is not served)
        assert router.artifact == r.artifact.name and router.threshold == pytest.approx(r.calibration.threshold)
        # The next request is scored by the retrained model.
        raw = openai.OpenAI(base_url=gw.url + "/v1", api_key="x").chat.completions.with_raw_response.create(
            model="gearshift/smart", messages=[{"role": "user", "content": gsm8k.prompts[99]}])
        score = float(re.search(r"score (\d\.\d+)", raw.headers["x-gearshift-reason"]).group(1))  # type: ignore[union-attr]
        expected = float(new.pair_score(new.predict(requests(gsm8k.subset(np.array([99])))[0])))
        assert score == pytest.approx(expected, abs=1e-3)
        assert f"threshold {r.calibration.threshold:.3f}" in raw.headers["x-gearshift-reason"]
        # Recalibrating the retrained model reads only the pairs after its training: none yet (every pair so far
        # is one it was fitted on); after 100 more requests, those and the one request above, and its version
        # names the artifact.
        with pytest.raises(ValueError, match="trained|no "):
            recalibrate(config, store, "gearshift/smart", floor=0.9, min_pairs=100)
        send(gw, list(gsm8k.prompts[600:700]), "gearshift/smart")
        settle(gw)
        again = recalibrate(config, store, "gearshift/smart", floor=0.9, min_pairs=100)
        assert again.pairs == 101 and again.previous_threshold == pytest.approx(r.calibration.threshold)
        assert store.router_versions("gearshift/smart")[1]["settings"]["artifact"] == r.artifact.name
    # A restarted gateway serves the promoted artifact from the start.
    with running(config) as gw:
        restarted = gw.gateway.routers["gearshift/smart"]
        deadline = time.monotonic() + 10
        while restarted.artifact != r.artifact.name and time.monotonic() < deadline:
            time.sleep(0.05)
        assert restarted.artifact == r.artifact.name
    # A version without an artifact was calibrated for the config's one: promoting it switches back.
    store = open_store(config.store.url, config.base_dir)
    try:
        store.promote("gearshift/smart", store.add_router_version("gearshift/smart", {"threshold": 0.42}, {}, "t"), "t")
        router = scoring_router(config, "gearshift/smart", store)
        assert (router.artifact, router.threshold) == ("router.json", 0.42)
    finally:
        store.close()


def test_retrain_refuses_other_routers_and_too_few_pairs(config_path: Path) -> None:
    config = load_config(config_path)
    with running(config) as gw:
        send(gw, list(load("routellm/gsm8k").prompts[:20]) * 2, "gearshift/smart")  # each prompt asked twice
        settle(gw)
        pairs, traces = collect_pairs(gw.gateway.store, gw.gateway.routers["gearshift/smart"])
        assert (len(pairs), traces) == (20, 40)  # a prompt asked again is one pair
        assert "20 pairs from 40 shadowed traces: a prompt asked more than once is one pair" in pairs_line(20, 40)
        with pytest.raises(ValueError, match="has 20 scored shadow pairs; need 200"):
            retrain(config, gw.gateway.store, "gearshift/smart", floor=0.9)
        with pytest.raises(TypeError, match="no threshold"):
            retrain(config, gw.gateway.store, "gearshift/strong", floor=0.9)
    out = subprocess.run([sys.executable, "-m", "gearshift.cli", "lab", "retrain", "--config", str(config_path),
                          "--router", "gearshift/smart", "--floor", "0.9"], capture_output=True, text=True)
    assert out.returncode == 2 and "need 200" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "gearshift.cli", "lab", "recalibrate", "--config", str(config_path),
                          "--router", "gearshift/smart", "--floor", "0.9"], capture_output=True, text=True)
    assert out.returncode == 2 and "need 100" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "gearshift.cli", "lab", "retrain", "--config", str(config_path),
                          "--router", "gearshift/smart"], capture_output=True, text=True)
    assert out.returncode == 2 and "give --floor" in out.stderr


def test_an_unusable_promoted_artifact_is_logged_once_then_loaded_when_it_arrives(
        config_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(config_path)
    with running(config) as gw:
        store = gw.gateway.store
        router = gw.gateway.routers["gearshift/smart"]
        served = router.model
        version = store.add_router_version("gearshift/smart", {"threshold": 0.4, "artifact": "later.json"}, {},
                                           "test")
        store.promote("gearshift/smart", version, "alice")

        def unusable() -> list[str]:
            return [r.getMessage() for r in caplog.records if "unusable artifact" in r.getMessage()]

        deadline = time.monotonic() + 10
        while not unusable() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # about ten more polls
        assert len(unusable()) == 1 and "later.json" in unusable()[0]
        assert router.model is served and router.threshold == 0.5  # kept the served model, whole
        # The file arrives (copied after the promotion): the next poll loads it.
        (config_path.parent / "later.json").write_bytes((config_path.parent / "router.json").read_bytes())
        deadline = time.monotonic() + 10
        while router.artifact != "later.json" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert router.artifact == "later.json" and router.threshold == 0.4 and router.model is not served
