"""Recalibration on live shadow pairs, router versions and promotion, and the A/B report, on replayed
GSM8K traffic (real recorded answers of Mixtral-8x7B and GPT-4-1106) through the gateway."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from gearshift.config import load_config
from gearshift.gateway.server import running
from gearshift.lab.ab import ab_report
from gearshift.lab.recalibrate import recalibrate, shadow_pairs
from gearshift.outcomes.datasets import load
from tests.support.gateway_helpers import promote_and_wait, replay_config_file, send, settle


@pytest.fixture
def config_path(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GEARSHIFT_DATA", str(data_dir))
    return replay_config_file(tmp_path, {
        "gearshift/rnd": {"kind": "random", "weights": {"mixtral-8x7b": 0.7, "gpt-4-1106": 0.3},
                          "shadow": {"rate": 1.0, "compare": "final_answer", "explore": "mixtral-8x7b"}},
        "gearshift/strong": {"kind": "fixed", "model": "gpt-4-1106"},
        "gearshift/ab": {"kind": "split", "arms": {"gearshift/rnd": 1, "gearshift/strong": 1}},
    })


def test_recalibrate_then_promote_applies_in_running_gateway(config_path: Path) -> None:
    config = load_config(config_path)
    prompts = list(load("routellm/gsm8k").prompts[:240])
    with running(config) as gw:
        send(gw, prompts, "gearshift/rnd")
        settle(gw)
        store = gw.gateway.store
        router = gw.gateway.routers["gearshift/rnd"]
        before = router.threshold
        pairs = shadow_pairs(store, router)
        # Every request left a pair: shadowed to GPT-4 when Mixtral answered, explored on Mixtral otherwise.
        assert len(pairs) == 240
        assert pairs.models == ["mixtral-8x7b", "gpt-4-1106"]
        r = recalibrate(config, store, "gearshift/rnd", floor=0.9, min_pairs=100)
        assert r.version == 1 and not r.promoted and r.pairs == 240
        assert r.calibration.bound is not None and r.calibration.bound >= 0.9
        # Pairs scored by final answer with no disagreement resolved: the fit keeps the floor on a lower
        # bound of quality, and the stored version says so.
        assert r.estimate is not None and r.lower_bound and r.estimate.pairs == 240
        [stored] = store.router_versions("gearshift/rnd")
        assert stored["metrics"]["pair_estimate"]["lower_bound"] is True
        time.sleep(0.3)
        assert router.threshold == before  # stored, not applied
        promote_and_wait(config_path, "gearshift/rnd", 1, lambda: router.threshold != before)
        assert router.threshold == pytest.approx(r.calibration.threshold)
        # The new threshold shows in the next route's reason.
        raw = openai.OpenAI(base_url=gw.url + "/v1", api_key="x").chat.completions.with_raw_response.create(
            model="gearshift/rnd", messages=[{"role": "user", "content": prompts[0]}])
        assert f"{r.calibration.threshold:.3f}" in raw.headers["x-gearshift-reason"]
        versions = store.router_versions("gearshift/rnd")
    assert [(v["version"], v["active"], v["promoted_by"]) for v in versions] == [(1, True, "alice")]
    listed = subprocess.run([sys.executable, "-m", "gearshift.cli", "routers", "list", "--config", str(config_path)],
                            capture_output=True, text=True)
    assert "alice" in listed.stdout and "gearshift/rnd" in listed.stdout
    # A restarted gateway starts with the promoted threshold.
    with running(config) as gw:
        assert gw.gateway.routers["gearshift/rnd"].threshold == pytest.approx(r.calibration.threshold)


def test_recalibrate_refuses_too_few_pairs_and_unscorable_routers(config_path: Path) -> None:
    config = load_config(config_path)
    with running(config) as gw:
        send(gw, list(load("routellm/gsm8k").prompts[:10]), "gearshift/rnd")
        settle(gw)
        with pytest.raises(ValueError, match="need 100"):
            recalibrate(config, gw.gateway.store, "gearshift/rnd", floor=0.9, min_pairs=100)
        with pytest.raises(TypeError, match="no threshold"):
            recalibrate(config, gw.gateway.store, "gearshift/strong", floor=0.9)


def test_ab_report_compares_arms_with_intervals(config_path: Path) -> None:
    config = load_config(config_path)
    prompts = list(load("routellm/gsm8k").prompts[:200])
    with running(config) as gw:
        ids = send(gw, prompts, "gearshift/ab", users=True)
        settle(gw)
        for i, trace_id in enumerate(ids[:60]):
            gw.gateway.store.write_feedback(trace_id, float(i % 3 != 0))
        traces = list(gw.gateway.store.traces())
        feedback = gw.gateway.store.feedback()
    report = ab_report(traces, feedback, control="gearshift/strong", router="gearshift/ab")
    arms = {a.name: a for a in report.arms}
    assert set(arms) == {"gearshift/rnd", "gearshift/strong"}
    assert arms["gearshift/rnd"].requests + arms["gearshift/strong"].requests == 200
    diffs = {d.signal: d for d in report.differences["gearshift/rnd"]}
    # Routing 70% to Mixtral is far cheaper than always-GPT-4, and the test says so with confidence.
    cost = diffs["cost_usd"]
    assert cost.diff.value < 0 and cost.diff.high < 0 and cost.p_value < 0.01
    assert "feedback" in diffs and diffs["feedback"].n_arm + diffs["feedback"].n_control == 60
    out = subprocess.run([sys.executable, "-m", "gearshift.cli", "lab", "ab", "--config", str(config_path),
                          "--router", "gearshift/ab", "--control", "gearshift/strong", "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["control"] == "gearshift/strong"
