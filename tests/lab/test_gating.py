"""Cascades in the lab: the vectorised sweep against hand-computed numbers, the sweep against a
prompt-by-prompt replay of the configured router on GSM8K, a three-tier RouterBench cascade, and the
learned gate trained, saved, loaded from a config and scored exactly as in training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gearshift.gates import build_gate
from gearshift.gates.learned import LearnedGate, LearnedGateModel
from gearshift.lab import metrics
from gearshift.lab.gating import answer_checks, gate_scores, sweep_cascade, train_learned_gate
from gearshift.lab.replay import cascade_outcome, replay, replay_cascade, requests
from gearshift.lab.report import cascade_records_from_replay
from gearshift.outcomes.datasets import ROUTELLM_STRONG, ROUTELLM_WEAK, load
from gearshift.outcomes.table import Outcomes
from gearshift.plan import build_routers
from tests.support.configs import parse_config

MATH_GATES = [{"kind": "arithmetic"}, {"kind": "final_answer"}]

# The recorded GSM8K answers of Mixtral-8x7B and GPT-4-1106 as two replay models (a config's `models:`).
REPLAY_MODELS = f"""models:
  mixtral: {{provider: replay, replay: {{dataset: routellm/gsm8k, column: {ROUTELLM_WEAK}}},
            price: {{input: 0.6, output: 0.6}}, rank: 1}}
  gpt-4: {{provider: replay, replay: {{dataset: routellm/gsm8k, column: {ROUTELLM_STRONG}}},
          price: {{input: 10, output: 30}}, rank: 9}}"""



def model(price_in: float, price_out: float, rank: int) -> dict[str, Any]:
    return {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "price": {"input": price_in, "output": price_out},
            "rank": rank}


def gsm8k_router(tmp_path: Path, gates: list[Any]):  # type: ignore[no-untyped-def]
    cfg = parse_config({"models": {"mixtral": model(0.6, 0.6, 1), "gpt-4": model(10, 30, 9)},
                        "routers": {"cascade": {"kind": "cascade", "tiers": [{"model": "mixtral", "gates": gates},
                                                                             {"model": "gpt-4"}]}}},
                       base_dir=tmp_path)
    return build_routers(cfg)["cascade"], {"mixtral": ROUTELLM_WEAK, "gpt-4": ROUTELLM_STRONG}


@pytest.fixture(scope="module")
def gsm8k(data_dir: Path) -> Outcomes:
    return load("routellm/gsm8k", drop_contaminated=True)


def test_sweep_counts_the_cheap_call_and_gates_on_every_prompt() -> None:
    o = Outcomes(prompts=np.array(["a", "b", "c", "d"], dtype=object), models=["weak", "strong"],
                 quality=np.array([[1, 1], [0, 1], [0, 1], [1, 0]], float),
                 cost=np.array([[1, 10], [1, 10], [1, 10], [1, 10]], float))
    c = sweep_cascade(np.array([0.1, 0.9, 0.5, 0.3]), o, "weak", "strong", gate_cost=0.5)
    np.testing.assert_allclose(c.strong_share, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(c.quality, [0.5, 0.75, 1.0, 0.75, 0.75])
    # Accepted: cheap + gate = 1.5; escalated: cheap + gate + expensive = 11.5.
    np.testing.assert_allclose(c.cost, [1.5, 4.0, 6.5, 9.0, 11.5])
    # q_weak 0.5, q_strong 0.75: the first escalation already recovers the whole gap.
    assert metrics.cpt(c, 1.0) == pytest.approx(0.25) and metrics.cpt(c, 0.5) == pytest.approx(0.125)


def test_programmatic_gates_on_gsm8k_sweep_equals_replay(gsm8k: Outcomes, tmp_path: Path) -> None:
    router, columns = gsm8k_router(tmp_path, MATH_GATES)
    gs = gate_scores([build_gate(g) for g in MATH_GATES], gsm8k, ROUTELLM_WEAK)
    escalate = ~gs.all_passed
    rep = replay_cascade(router, gsm8k, columns=columns)
    # The replay walks each route through the real gates: the same prompts escalate.
    np.testing.assert_array_equal(rep.escalated, escalate)
    cw, cs = gsm8k.cost[:, 0], gsm8k.cost[:, 1]
    np.testing.assert_allclose(rep.cost, cw + np.where(escalate, cs, 0.0))
    assert rep.gate_cost.sum() == 0 and (rep.gate_seconds > 0).all()
    # The vectorised sweep has that configuration as one of its points, with the same numbers.
    curve = sweep_cascade(gs.escalation_scores(), gsm8k, ROUTELLM_WEAK, ROUTELLM_STRONG)
    i = int(np.flatnonzero(np.isclose(curve.strong_share, escalate.mean()))[0])
    assert curve.quality[i] == pytest.approx(rep.quality.mean())
    assert curve.cost[i] == pytest.approx(rep.cost.mean())
    # The generic replay with the cascade extension point agrees too.
    dec = replay(router, gsm8k, columns=columns, outcome_of=cascade_outcome)
    np.testing.assert_allclose(dec.cost, rep.cost)
    # Real behaviour: the answers these gates escalate are mostly wrong; the ones they keep mostly right.
    qw = gsm8k.quality[:, 0]
    assert 0.10 < escalate.mean() < 0.20
    assert qw[escalate].mean() < 0.10 and qw[~escalate].mean() > 0.70
    summary = rep.summary()
    assert summary["accepted_at_tier1"]["count"] + summary["escalated"]["count"] == len(gsm8k)
    assert summary["spend_usd"] == pytest.approx(rep.cost.sum())
    # The lab report's cascade hook uses this replay.
    rec = cascade_records_from_replay(router, gsm8k, columns)
    assert rec is not None and rec.source == "replay"
    np.testing.assert_array_equal(rec.escalated, escalate)


def test_a_swept_gate_keeps_the_other_gates_fixed(gsm8k: Outcomes) -> None:
    gates = [build_gate({"kind": "final_answer"}), build_gate({"kind": "arithmetic", "threshold": 0.0})]
    gs = gate_scores(gates, gsm8k.subset(np.arange(300)), ROUTELLM_WEAK)
    esc = gs.escalation_scores("arithmetic")
    fails_final = ~gs.passed[:, 0]
    # Prompts the fixed gate fails come first, whatever the swept gate says.
    assert esc[fails_final].min() >= 2.0 > 1.0 >= esc[~fails_final].max()
    t = gs.gate_threshold(0.5)
    assert t is not None and t > 0.5 and gs.gate_threshold(1.5) is None


def test_three_tier_cascade_on_routerbench_counts_every_call(data_dir: Path, tmp_path: Path) -> None:
    o = load("routerbench/mbpp")
    names = {"mixtral": "mistralai/mixtral-8x7b-chat", "gpt-35": "gpt-3.5-turbo-1106", "gpt-4": "gpt-4-1106-preview"}
    keep = ~np.isnan(o.quality[:, [o.index(m) for m in names.values()]]).any(axis=1)
    o = o.subset(keep)
    gate = {"kind": "regex", "must_match": r"def \w+\("}  # the answer must define a function
    cfg = parse_config({"models": {"mixtral": model(0.6, 0.6, 1), "gpt-35": model(1, 2, 5), "gpt-4": model(10, 30, 9)},
                        "routers": {"c": {"kind": "cascade", "tiers": [
                            {"model": "mixtral", "gates": [gate]}, {"model": "gpt-35", "gates": [gate]},
                            {"model": "gpt-4"}]}}}, base_dir=tmp_path)
    rep = replay_cascade(build_routers(cfg)["c"], o, columns=names)
    g = build_gate(gate)
    p1 = gate_scores([g], o, names["mixtral"]).all_passed
    p2 = gate_scores([g], o, names["gpt-35"]).all_passed
    c1, c2, c3 = (o.cost[:, o.index(m)] for m in names.values())
    # Recorded real costs: every tier tried is paid for.
    np.testing.assert_allclose(rep.cost, c1 + np.where(p1, 0, c2 + np.where(p2, 0, c3)))
    np.testing.assert_array_equal(rep.tier, np.where(p1, 0, np.where(p2, 1, 2)))
    assert (rep.tier == 0).any() and (rep.tier == 1).any() and (rep.tier == 2).any()


def test_learned_gate_trains_saves_loads_and_scores_as_in_training(gsm8k: Outcomes, tmp_path: Path) -> None:
    rows = np.arange(len(gsm8k))
    train, test = rows[rows % 2 == 0], rows[rows % 2 == 1]
    checks = answer_checks(gsm8k, ROUTELLM_WEAK)
    trained = train_learned_gate(gsm8k, ROUTELLM_WEAK, ROUTELLM_STRONG, rows=train, checks=checks, threshold=0.7)
    trained.save(tmp_path / "gate.json")
    # From a config, with the artifact path relative to the config file.
    router, columns = gsm8k_router(tmp_path, [{"kind": "learned", "artifact": "gate.json"}])
    gate = router.route(requests(gsm8k)[0]).steps[0].gates[0]
    assert isinstance(gate, LearnedGate) and gate.threshold == 0.7
    held = gsm8k.subset(test)
    reqs = requests(held)
    answers = [a or "" for a in held.responses[:, 0]]
    batch = LearnedGateModel.load(tmp_path / "gate.json").scores(reqs, answers)
    gs = gate_scores([gate], held, ROUTELLM_WEAK)
    np.testing.assert_allclose(gs.scores[:, 0], batch, rtol=1e-5)
    np.testing.assert_allclose(gs.scores[:, 0], [trained.score(r, a) for r, a in zip(reqs, answers, strict=True)],
                               rtol=1e-5)
    v = gate.check(reqs[0], answers[0])
    assert v.reasons[0].startswith("P(escalation helps)")
    # Real behaviour on held-out prompts: the answer tells right from wrong far better than chance.
    curve = sweep_cascade(gs.escalation_scores(), held, ROUTELLM_WEAK, ROUTELLM_STRONG)
    assert metrics.apgr(curve) > 0.7
    # The configured router replays with that gate at its threshold.
    rep = replay_cascade(router, held, columns=columns)
    np.testing.assert_array_equal(rep.escalated, gs.scores[:, 0] < 0.7)


def test_judge_gates_cannot_be_replayed_offline(gsm8k: Outcomes) -> None:
    judge = build_gate({"kind": "judge", "model": "gpt-4"}, {"gpt-4": parse_config(
        {"models": {"gpt-4": model(10, 30, 9)}}).models["gpt-4"]})
    with pytest.raises(ValueError, match="cannot replay it on recorded text"):
        gate_scores([judge], gsm8k.subset(np.arange(3)), ROUTELLM_WEAK)


def test_cli_trains_a_gate_and_replays_the_configured_cascade(data_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gearshift.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["lab", "train-gate", "--outcomes", "routellm/gsm8k", "--drop-contaminated",
                               "--folds", "2", "--out", str(tmp_path / "gate.json")])
    assert res.exit_code == 0, res.output
    assert "held-out (2 folds, 1307 prompts): APGR" in res.output
    assert (tmp_path / "gate.json").exists()
    (tmp_path / "gearshift.yaml").write_text(REPLAY_MODELS + """
routers:
  cascade:
    kind: cascade
    tiers:
      - {model: mixtral, gates: [{kind: arithmetic}, {kind: learned, artifact: gate.json}]}
      - {model: gpt-4}
""")
    res = runner.invoke(main, ["lab", "cascade", "--config", str(tmp_path / "gearshift.yaml"), "--router", "cascade",
                               "--outcomes", "routellm/gsm8k", "--drop-contaminated", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["requests"] == 1307 and 0 < out["escalation_rate"] < 1
    assert out["accepted_at_tier1"]["count"] + out["escalated"]["count"] == 1307
    assert out["sweep"]["swept"] == "learned" and out["in_sample_gates"] == ["learned"]


# --- the judge gate, calibrated on its recorded verdicts ----------------------------------------------

def _judged(o: Outcomes, seed: int = 0) -> Outcomes:
    """GSM8K with a recorded 1-10 judge on Mixtral's answers that mostly knows right from wrong (right
    answers 5-10, wrong ones 1-7), $0.0004 and ~0.8 s a judgement, and answer latencies (1 s, 3 s)."""
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    right = o.quality[:, o.index(ROUTELLM_WEAK)] >= 0.5
    score = np.where(right, rng.integers(5, 11, len(o)), rng.integers(1, 8, len(o))) / 10
    judge = np.full(o.quality.shape, np.nan)
    judge[:, o.index(ROUTELLM_WEAK)] = score
    cost = np.where(np.isnan(judge), np.nan, 0.0004)
    latency = np.where(np.isnan(judge), np.nan, 0.8)
    answer_latency = np.stack([np.full(len(o), 1.0 if m == ROUTELLM_WEAK else 3.0) for m in o.models], axis=1)
    return replace(o, judge=judge, judge_cost=cost, judge_latency=latency, latency=answer_latency)


JUDGE_GATES = [{"kind": "judge", "model": "judge", "scale": "1-10"}]


def judged_router(tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = parse_config({"models": {"mixtral": model(0.6, 0.6, 1), "gpt-4": model(10, 30, 9), "judge": model(10, 30, 9)},
                        "routers": {"cascade": {"kind": "cascade", "tiers": [
                            {"model": "mixtral", "gates": JUDGE_GATES}, {"model": "gpt-4"}]}}}, base_dir=tmp_path)
    return build_routers(cfg)["cascade"]


def test_a_judge_gate_replays_its_recorded_verdicts_and_is_calibrated_like_any_gate(gsm8k, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from gearshift.lab.gating import calibrate_gate

    o = _judged(gsm8k)
    [judge] = judged_router(tmp_path).gates[0]
    with pytest.raises(ValueError, match="judge"):  # without recorded verdicts the lab cannot run a judge
        gate_scores([judge], gsm8k, ROUTELLM_WEAK)
    gs = gate_scores([judge], o, ROUTELLM_WEAK)
    assert np.array_equal(gs.scores[:, 0], o.judge[:, o.index(ROUTELLM_WEAK)])  # type: ignore[index]
    assert np.allclose(gs.cost, 0.0004) and np.allclose(gs.latency, 0.8)  # type: ignore[arg-type]
    assert np.array_equal(gs.passed[:, 0], gs.scores[:, 0] >= 0.7)  # the 1-10 scale's default threshold
    gc = calibrate_gate(gs, o, ROUTELLM_WEAK, ROUTELLM_STRONG, 0.95, sweep="judge", n_boot=200)
    c = gc.calibration
    assert gc.threshold is not None and 0.0 < gc.threshold <= 1.0
    assert c.bound >= 0.95 and c.retained_test > 0.9 and 0 < gc.escalation_rate < 1
    assert gc.gate_usd == pytest.approx(0.0004)  # every request pays the judge
    assert gc.added_latency == pytest.approx((1.8, 1.8))  # the cheap answer (1 s) and the judge (0.8 s)
    assert sum(gc.verdicts.values()) == gc.held_out == len(o) - round(len(o) / 2)
    # A stricter floor escalates more, and the judge's passes it keeps are fewer.
    strict = calibrate_gate(gs, o, ROUTELLM_WEAK, ROUTELLM_STRONG, 0.99, sweep="judge", n_boot=200)
    assert strict.escalation_rate >= gc.escalation_rate
    # The cascade replay counts the recorded judging in cost and in the escalated requests' latency.
    rep = replay_cascade(judged_router(tmp_path), o, columns={"mixtral": ROUTELLM_WEAK, "gpt-4": ROUTELLM_STRONG})
    assert np.allclose(rep.gate_cost, 0.0004)
    assert np.allclose(rep.latency[rep.escalated], 1.0 + 0.8 + 3.0) and np.allclose(rep.latency[~rep.escalated], 1.8)


def test_lab_cascade_calibrates_a_judge_from_an_outcomes_file(gsm8k, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from gearshift.cli import main
    from gearshift.outcomes.files import read_outcomes, write_outcomes

    o = _judged(gsm8k.subset(np.arange(600)))
    write_outcomes(o, tmp_path / "judged.csv")
    back = read_outcomes(tmp_path / "judged.csv")
    assert np.array_equal(back.judge, o.judge, equal_nan=True) and back.judge_latency is not None  # type: ignore[arg-type]
    (tmp_path / "gearshift.yaml").write_text(REPLAY_MODELS + """
  judge: {provider: openai, base_url: "http://127.0.0.1:9/v1", price: {input: 10, output: 30}, rank: 9}
routers:
  cascade:
    kind: cascade
    tiers:
      - {model: mixtral, gates: [{kind: judge, model: judge, scale: 1-10}]}
      - {model: gpt-4}
""")
    res = CliRunner().invoke(main, ["lab", "cascade", "--config", str(tmp_path / "gearshift.yaml"), "--router", "cascade",
                                    "--outcomes", str(tmp_path / "judged.csv"), "--floor", "0.95", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    cal = out["calibration"]
    assert out["sweep"]["swept"] == "judge" and cal["gate"] == "judge" and cal["held_out"] == 300
    assert cal["gate_usd_per_request"] == pytest.approx(0.0004)
    assert cal["added_latency_escalated_s"] == {"p50": pytest.approx(1.8), "p95": pytest.approx(1.8)}
    assert out["gate_spend_usd"] == pytest.approx(600 * 0.0004)
    res = CliRunner().invoke(main, ["lab", "cascade", "--config", str(tmp_path / "gearshift.yaml"), "--router", "cascade",
                                    "--outcomes", str(tmp_path / "judged.csv"), "--floor", "0.95"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # rich wraps lines
    assert "calibrated judge for a 95% floor" in text and "escalated requests wait 1.80s p50" in text
