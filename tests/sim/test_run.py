"""The lifecycle simulation on a small real stream: 300 GSM8K prompts (recorded Mixtral-8x7B and GPT-4-1106
answers), 2 seeds, a classifier in observe mode shadowing every request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gearshift.lab.train import TrainSettings, fit
from gearshift.learned import artifact
from gearshift.learned.features import FeatureSpec
from gearshift.outcomes.datasets import ROUTELLM_STRONG, ROUTELLM_WEAK, load
from gearshift.outcomes.table import Outcomes
from gearshift.sim import priced, simulate

N = 300
PER_HOUR = 50.0


def _config(artifact_path: Path) -> dict[str, Any]:
    return {
        "models": {
            "mixtral": {"provider": "replay", "replay": {"dataset": "routellm/gsm8k", "column": ROUTELLM_WEAK},
                        "price": {"input": 0.6, "output": 0.6}, "rank": 1},
            "gpt4": {"provider": "replay", "replay": {"dataset": "routellm/gsm8k", "column": ROUTELLM_STRONG},
                     "price": {"input": 10, "output": 30}, "rank": 10},
        },
        "routers": {"smart": {
            "kind": "classifier", "artifact": str(artifact_path), "threshold": 0.5, "mode": "observe",
            "shadow": {"rate": 1.0, "compare": "recorded", "explore": "mixtral", "daily_budget_usd": 10.0},
            "proof": {"min_pairs": 150, "floor": 0.9, "auto_promote": True, "every_hours": 1, "retrain": True}}},
    }


@pytest.fixture(scope="module")
def stream(data_dir: Path) -> Outcomes:
    return load("routellm/gsm8k").subset(np.arange(N))


@pytest.fixture(scope="module")
def prior(stream: Outcomes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Trained, barely regularised, on the very prompts it will see: the lifecycle is under test, not
    # generalisation (on the true labels it has a strong signal; on shuffled ones, none).
    a = fit(stream, TrainSettings(features=FeatureSpec(word_bits=12), c_strong=100.0, c_weak=100.0))
    return artifact.save(a, tmp_path_factory.mktemp("prior") / "router.json")


def _shuffled(o: Outcomes) -> Outcomes:
    perm = np.random.default_rng(7).permutation(len(o))
    return Outcomes(prompts=o.prompts, models=o.models, quality=np.asarray(o.quality)[perm], cost=o.cost,
                    responses=o.responses, meta=o.meta, name="shuffled")


def test_a_router_with_signal_is_promoted_and_its_costs_add_up(stream: Outcomes, prior: Path, tmp_path: Path) -> None:
    raw = _config(prior)
    sim = simulate(raw, stream, base_dir=tmp_path, seeds=[0, 1], per_hour=PER_HOUR)
    table = priced(raw, stream, base_dir=tmp_path)  # every prompt's answer of each model, priced as served
    assert table.models == ["mixtral", "gpt4"] and len(table) == N
    for run in sim.runs:
        order = np.random.default_rng(run.seed).permutation(N)
        # Always-strong is GPT-4's answer to every request of the run; serving cost is the served model's.
        assert run.strong.sum() == pytest.approx(table.cost[:, 1].sum())
        assert run.strong_quality.sum() == pytest.approx(table.quality[:, 1].sum())
        served = np.where(run.strong_served, table.cost[order, 1], table.cost[order, 0])
        assert run.serving.sum() == pytest.approx(served.sum())
        first = run.promotions[0]
        # Promoted at a proof check (on the hour) after enough pairs; observing before, own decisions after.
        assert first.hours == pytest.approx(first.request / PER_HOUR) and first.hours == int(first.hours) > 0
        assert first.pairs >= 150 and first.shadow_usd > 0 and first.reason.startswith("proven")
        assert not run.own[:first.request].any() and run.own[first.request]
        assert run.strong_served[:first.request].all() and not run.strong_served[first.request:].all()
        assert run.savings(first.request) > 0 and run.savings() < run.savings(first.request)
        assert run.shadow[-1] > 0 and np.all(np.diff(run.shadow) >= 0)
    s = sim.summary()
    assert s["promoted_runs"] == 2 and s["median_pairs_to_promotion"] >= 150
    assert 0 <= sim.coverage <= 1
    assert sim.coverage == np.mean([r.quality_share(r.promotions[0].request) >= 0.9 for r in sim.runs])

    written = sim.write(tmp_path / "sim.json", tmp_path / "sim.png")
    assert [p.name for p in written] == ["sim.json", "sim.png"]
    data = json.loads((tmp_path / "sim.json").read_text())
    assert data["floor_coverage"] == sim.coverage and len(data["runs"]) == 2 and len(data["series"]) == 2
    assert data["runs"][0]["first_promotion"]["hours"] == sim.runs[0].promotions[0].hours
    assert data["runs"][0]["always_strong_usd"] == pytest.approx(table.cost[:, 1].sum())
    assert (tmp_path / "sim.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_signal_nothing_is_promoted_and_the_safe_model_serves_everything(
        stream: Outcomes, prior: Path, tmp_path: Path) -> None:
    shuffled = _shuffled(stream)
    sim = simulate(_config(prior), shuffled, base_dir=tmp_path, seeds=[0], per_hour=PER_HOUR)
    for run in sim.runs:
        assert run.promotions == [] and not run.own.any() and run.strong_served.all()
        assert run.serving.sum() == pytest.approx(run.strong.sum()) and run.savings() == pytest.approx(0.0)
        assert run.quality_share() == pytest.approx(1.0)
        # The prior failed its proof on 150 pairs, and so did its learner's cross-fit: nothing was refitted.
        assert run.events == []
        # Checked at 150 pairs, then only when a model's pairs had grown by half: fewer checks than hours.
        assert run.checks and run.checks[0] >= 150 and len(run.checks) < int(run.hours[-1])
    assert sim.coverage == 1.0 and sim.summary()["promoted_runs"] == 0


def test_judge_noise_flips_pair_scores_at_the_given_rate(stream: Outcomes, prior: Path, tmp_path: Path) -> None:
    """A judge agreeing with the truth at rate 0.5 carries no information: nothing is promoted."""
    sim = simulate(_config(prior), stream, base_dir=tmp_path, seeds=[0], per_hour=PER_HOUR, judge_agreement=0.5,
                   limit=200)
    assert sim.runs[0].promotions == [] and sim.judge_agreement == 0.5


def test_an_observing_router_shadows_at_its_observe_rate_then_at_its_rate(stream: Outcomes, prior: Path,
                                                                          tmp_path: Path) -> None:
    """While observing, the client has the reference's answer and a pair costs only the cheap call:
    `observe_rate: 1` pairs every request until the promotion, then `rate` applies."""
    raw = _config(prior)
    raw["routers"]["smart"]["shadow"] |= {"rate": 0.2, "observe_rate": 1.0}
    sim = simulate(raw, stream, base_dir=tmp_path, seeds=[0], per_hour=PER_HOUR)
    [run] = sim.runs
    first = run.promotions[0]
    assert first.pairs == first.request >= 150  # every observed request made a pair
    after = (run.pairs[-1] - first.pairs) / (N - first.request)
    assert 0.05 < after < 0.45, after  # about one request in five once it serves
