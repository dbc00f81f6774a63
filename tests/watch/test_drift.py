"""The loop closed on real data: GSM8K traffic replayed through the gateway with shadowing; then the
cheap model is "updated" (half its recorded answers replaced by answers to other problems); the
watch raises the alarm; recalibration on the new shadow pairs restores the quality floor.

Run with -s to see the figures."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import yaml

from gearshift.gateway.server import running
from gearshift.lab.recalibrate import recalibrate
from gearshift.outcomes.datasets import ROUTELLM_STRONG, ROUTELLM_WEAK, gsm8k_answer_value, load
from gearshift.outcomes.files import write_outcomes
from gearshift.outcomes.table import Outcomes
from gearshift.watch import Baseline, Watch
from tests.support.configs import parse_config

FLOOR = 0.70  # keep 72% of always-GPT-4 quality, as shadow pairs measure it (the reference taken as right)
BATCH = 25


def degraded(o: Outcomes, gold: dict[str, int | None], share: float, seed: int = 0) -> Outcomes:
    """The weak model after a bad update: `share` of its answers are its answers to other problems."""
    rng = np.random.default_rng(seed)
    w = o.index(ROUTELLM_WEAK)
    responses, quality = o.responses.copy(), o.quality.copy()  # type: ignore[union-attr]
    rows = rng.choice(len(o), size=int(share * len(o)), replace=False)
    donors = rng.permutation(rows)
    for i, j in zip(rows, donors, strict=True):
        if i == j:
            continue
        responses[i, w] = o.responses[j, w]  # type: ignore[index]
        quality[i, w] = float(gsm8k_answer_value(responses[i, w] or "") == gold[o.prompts[i]])
    return Outcomes(prompts=o.prompts, models=o.models, quality=quality, cost=o.cost, responses=responses,
                    meta=dict(o.meta), name="gsm8k-degraded")


def config_for(tmp: Path, weak_file: Path, strong_file: Path) -> Any:
    data = {
        "models": {
            "mixtral": {"provider": "replay", "replay": {"dataset": str(weak_file), "column": ROUTELLM_WEAK},
                        "price": {"input": 0.6, "output": 0.6}, "rank": 1},
            "gpt-4": {"provider": "replay", "replay": {"dataset": str(strong_file), "column": ROUTELLM_STRONG},
                      "price": {"input": 10, "output": 30}, "rank": 10},
        },
        "routers": {"gearshift/auto": {
            "kind": "random", "weights": {"mixtral": 0.5, "gpt-4": 0.5},
            "shadow": {"rate": 1.0, "compare": "final_answer", "explore": "mixtral"}}},
        "store": {"url": f"sqlite:///{tmp / 'traces.db'}", "flush_interval": 0.05},
        "server": {"version_poll_seconds": 0.1, "shadow_workers": 8},
        # Replay latencies say nothing about a real upstream's: that bound is off here.
        "watch": {"window_requests": 200, "min_requests": 50, "min_shadow_pairs": 30, "quality_floor": FLOOR,
                  "bounds": {"latency_p95_ratio": None}},
    }
    return parse_config(yaml.safe_load(yaml.safe_dump(data)), base_dir=tmp)


def send(gw, prompts: list[str]) -> list[tuple[str, float]]:  # type: ignore[no-untyped-def]
    """(model that answered, recorded quality of its answer) per prompt."""
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)

    def one(p: str) -> tuple[str, float]:
        raw = client.chat.completions.with_raw_response.create(
            model="gearshift/auto", messages=[{"role": "user", "content": p}])
        return raw.headers["x-gearshift-model"], float(raw.parse().model_extra["gearshift_replay"]["quality"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, prompts))


def settle(gw) -> list[dict]:  # type: ignore[no-untyped-def]
    g = gw.gateway
    deadline = time.monotonic() + 60
    while (g.shadower.queue.qsize() or g.writer.pending()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    return list(g.store.traces())


def retained_truth(answers: list[tuple[str, float]], prompts: list[str], o: Outcomes) -> float:
    """Recorded correctness of the served answers over always-GPT-4's on the same prompts."""
    row = {p: i for i, p in enumerate(o.prompts)}
    strong = np.mean([o.quality[row[p], o.index(ROUTELLM_STRONG)] for p in prompts])
    return float(np.mean([q for _, q in answers]) / strong)


def test_watch_alarms_on_a_worse_cheap_model_and_recalibration_restores_the_floor(tmp_path: Path, data_dir: Path) -> None:
    o = load("routellm/gsm8k", drop_contaminated=True)
    gold = {json.loads(line)["question"]: gsm8k_answer_value(json.loads(line)["answer"].split("####")[-1])
            for line in (data_dir / "routellm" / "gsm8k" / "test.jsonl").read_text().splitlines()}
    normal_file, worse_file = tmp_path / "normal.csv", tmp_path / "worse.csv"
    write_outcomes(o, normal_file)
    worse = degraded(o, gold, share=0.5)
    write_outcomes(worse, worse_file)
    prompts = list(np.random.default_rng(1).permutation(o.prompts))
    phase1, phase2, phase3 = prompts[:400], prompts[400:800], prompts[800:1200]
    quality_alarms = {"shadow_agreement", "quality_retained"}

    # 1. Normal traffic: the first 150 requests are the baseline; later windows of it must not alarm.
    config = config_for(tmp_path, normal_file, normal_file)
    watch = Watch(config)
    false_alarms = 0
    with running(config) as gw:
        answers1 = send(gw, phase1[:150])
        baseline = Baseline.from_traces(settle(gw), config)
        for k in range(150, len(phase1), BATCH):
            answers1 += send(gw, phase1[k:k + BATCH])
            report = watch.check(settle(gw)[-config.watch.window_requests:], baseline)
            false_alarms += bool({m.name for m in report.drifted} & quality_alarms)

    # 2. The cheap model is updated for the worse. Check the window after every batch of requests.
    config = config_for(tmp_path, worse_file, normal_file)
    alarm_after = None
    start2 = time.time()
    with running(config) as gw:
        for k in range(0, len(phase2), BATCH):
            send(gw, phase2[k:k + BATCH])
            window = settle(gw)[-config.watch.window_requests:]
            report = watch.check(window, baseline)
            fired = {m.name for m in report.drifted}
            if alarm_after is None and fired & quality_alarms:
                alarm_after = k + BATCH
                alarm_report = report
        settle(gw)

        # 3. Recalibrate on the pairs seen since the update; promote; the running gateway applies it.
        rec = recalibrate(config, gw.gateway.store, "gearshift/auto", FLOOR, since=start2, min_pairs=200, apply=True)
        router = gw.gateway.routers["gearshift/auto"]
        deadline = time.monotonic() + 10
        while router.threshold != pytest.approx(rec.calibration.threshold) and time.monotonic() < deadline:
            time.sleep(0.05)
        answers3 = send(gw, phase3)
        after = watch.check(settle(gw)[-len(phase3):], baseline)

    truth1 = retained_truth(answers1, phase1, o)
    share3 = np.mean([m == "gpt-4" for m, _ in answers3])
    truth3 = retained_truth(answers3, phase3, worse)
    qr = alarm_report.metric("quality_retained") if alarm_after else None
    print(f"\nphase 1 (normal): strong share {np.mean([m == 'gpt-4' for m, _ in answers1]):.1%}, "
          f"quality retained (recorded correctness) {truth1:.1%}; baseline shadow agreement "
          f"{baseline.shadow_agreement:.3f}; {false_alarms} quality alarms in {(len(phase1) - 150) // BATCH} later windows")
    print(f"phase 2 (cheap model degraded): alarm after {alarm_after} requests "
          f"({', '.join(sorted(m.name for m in alarm_report.drifted))}); quality retained estimate "
          f"{qr.value:.3f} [{qr.lower:.3f}, {qr.upper:.3f}] vs floor {FLOOR}")
    print(f"recalibration on {rec.pairs} pairs: threshold {rec.previous_threshold:.3f} -> "
          f"{rec.calibration.threshold:.3f} (bound {rec.calibration.bound:.3f})")
    print(f"phase 3 (recalibrated): strong share {share3:.1%}, quality retained (recorded correctness) "
          f"{truth3:.1%}; watch quality_retained {after.metric('quality_retained').value:.3f} "
          f"lower {after.metric('quality_retained').lower:.3f}")
    assert false_alarms == 0
    assert alarm_after is not None and alarm_after <= 200
    assert rec.calibration.threshold < rec.previous_threshold  # more traffic to the strong model
    assert truth3 >= FLOOR
    assert after.metric("quality_retained").value >= FLOOR
    assert not {m.name for m in after.drifted} & {"quality_retained"}
