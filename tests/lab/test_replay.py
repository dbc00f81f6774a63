"""Replay and sweeps with real routers, bootstrap intervals, and RouteLLM's published reference rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gearshift.lab import metrics as M
from gearshift.lab.bootstrap import bootstrap, bootstrap_curve, resample_counts, resample_matrix
from gearshift.lab.evaluate import evaluate_pair
from gearshift.lab.replay import fixed_decisions, replay, router_scores, sweep, sweep_scores
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W
from gearshift.outcomes.datasets import load
from gearshift.outcomes.table import Outcomes
from gearshift.plan import build_routers
from gearshift.routers.random import RandomOptions, RandomRouter
from tests.support.configs import parse_config


def rnd(seed: int = 0, weak: str = W, strong: str = S) -> RandomRouter:
    return RandomRouter("random", RandomOptions(weights={weak: 1.0, strong: 1.0}, seed=seed))


def small() -> Outcomes:
    return Outcomes(prompts=np.array(["short", "a much longer prompt " * 20, "medium sized one", "x"], dtype=object),
                    models=["cheap", "dear"], quality=np.array([[1, 1], [0, 1], [1, 0], [0, 0]], float),
                    cost=np.array([[1, 10], [2, 20], [1, 10], [1, 10]], float),
                    meta={"task": np.array(["chat", "code", "chat", "chat"], dtype=object)})


def configured(routers: dict) -> dict:
    models = {"small": {"provider": "openai", "price": {"input": 0.1, "output": 0.4}},
              "large": {"provider": "openai", "price": {"input": 2.5, "output": 10}}}
    return build_routers(parse_config({"models": models, "routers": routers}))


def test_replay_runs_route_on_every_prompt_with_its_metadata() -> None:
    o = small()
    r = configured({"by-task": {"kind": "rules", "default": "small",
                                "rules": [{"when": {"metadata": {"task": "code"}}, "model": "large"}]}})["by-task"]
    d = replay(r, o, columns={"small": "cheap", "large": "dear"})
    np.testing.assert_array_equal(d.choice, [0, 1, 0, 0])
    np.testing.assert_allclose(d.quality, [1, 1, 1, 0])
    np.testing.assert_allclose(d.cost, [1, 20, 1, 1])
    assert d.share("dear") == 0.25 and d.mean_quality == 0.75
    f = fixed_decisions(o, "dear")
    assert f.mean_cost == 12.5 and f.share("dear") == 1.0


def test_replay_names_a_model_missing_from_the_outcomes() -> None:
    r = configured({"always": {"kind": "fixed", "model": "large"}})["always"]
    with pytest.raises(KeyError, match="model 'large' is not in outcomes"):
        replay(r, small())


def test_replay_extension_point_maps_a_route_to_cost_and_quality() -> None:
    """A cascade-style outcome function: try the primary, escalate when it was wrong, pay for both."""
    o = small()
    r = configured({"always": {"kind": "fixed", "model": "small"}})["always"]

    def cascade(route, outcomes, row, column):  # type: ignore[no-untyped-def]
        first = column(route.primary)
        if outcomes.quality[row, first] >= 1:
            return first, float(outcomes.cost[row, first]), float(outcomes.quality[row, first])
        second = column("large")
        return second, float(outcomes.cost[row, first] + outcomes.cost[row, second]), float(outcomes.quality[row, second])

    d = replay(r, o, columns={"small": "cheap", "large": "dear"}, outcome_of=cascade)
    np.testing.assert_array_equal(d.choice, [0, 1, 0, 1])
    np.testing.assert_allclose(d.cost, [1, 22, 1, 11])


def test_sweep_of_a_scoring_router_matches_its_own_route_decisions(data_dir: Path) -> None:
    o = load("routellm/gsm8k", drop_contaminated=True)
    r = rnd(seed=3)
    curve = sweep(r, o)
    point = curve.at(r.threshold)
    d = replay(r, o)
    assert point.strong_share == pytest.approx(d.share(S))
    assert point.quality == pytest.approx(d.mean_quality)
    assert point.cost == pytest.approx(d.mean_cost)
    assert curve.strong_share[0] == 0 and curve.strong_share[-1] == 1
    assert curve.quality[0] == pytest.approx(o.quality[:, 0].mean()) and curve.quality[-1] == pytest.approx(o.quality[:, 1].mean())


def test_sweep_refuses_prompts_without_quality() -> None:
    o = small()
    o.quality[0, 1] = np.nan
    with pytest.raises(ValueError, match="lack a quality"):
        sweep_scores(np.arange(4.0), o, "cheap", "dear")


# --- bootstrap -------------------------------------------------------------------------------------


def test_resample_counts_are_multinomial_draws() -> None:
    chunks = list(resample_counts(50, 230, seed=1, chunk=100))
    assert [c.shape for c in chunks] == [(100, 50), (100, 50), (30, 50)]
    assert all((c.sum(axis=1) == 50).all() for c in chunks)
    allc = np.concatenate(chunks)
    assert allc.mean() == pytest.approx(1.0)
    np.testing.assert_array_equal(resample_matrix(50, 230, seed=1), allc)


def test_weighted_and_plain_bootstrap_agree() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    plain = bootstrap(x, lambda a: a.mean(), n=2000, seed=1)
    fast = bootstrap(x, lambda a, w: w @ a / len(a), n=2000, seed=2, weighted=True)
    assert plain.value == pytest.approx(fast.value, rel=1e-12)
    assert plain.value == pytest.approx(x.mean())
    se = x.std() / np.sqrt(len(x))
    for e in (plain, fast):
        assert e.high - e.low == pytest.approx(2 * 1.96 * se, rel=0.1)
        assert e.low < e.value < e.high


def test_bootstrap_curve_recomputes_the_curve_per_resample(data_dir: Path) -> None:
    o = load("routellm/gsm8k", drop_contaminated=True)
    scores = router_scores(rnd(), o)
    stats = {"apgr": M.apgr, "cpt50": lambda c: M.cpt(c, 0.5), "q_strong": lambda c: c.q_strong}
    counts = resample_matrix(len(o), 300, seed=5)
    est = bootstrap_curve(scores, o, W, S, stats, counts=counts)
    full = sweep_scores(scores, o, W, S)
    assert est["apgr"].value == pytest.approx(M.apgr(full))
    # Each resample's curve equals the sweep of the resampled prompts (checked on two resamples).
    for b in (0, 1):
        rows = np.repeat(np.arange(len(o)), counts[b])
        sub = sweep_scores(scores[rows], o.subset(rows), W, S)
        one = bootstrap_curve(scores, o, W, S, stats, counts=counts[b:b + 1], alpha=0.5)
        assert one["apgr"].low == pytest.approx(M.apgr(sub), abs=1e-5)
        assert one["q_strong"].low == pytest.approx(float(sub.q_strong), abs=1e-6)
    # The strong model's accuracy interval matches the binomial standard error.
    p, n = o.quality[:, 1].mean(), len(o)
    width = est["q_strong"].high - est["q_strong"].low
    assert width == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / n), rel=0.2)


# --- RouteLLM reference rows -----------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["routellm/mmlu", "routellm/gsm8k"])
def test_random_router_reproduces_routellm_random_rows(spec: str, data_dir: Path) -> None:
    """Paper: random router APGR ~0.50, CPT(50%) ~50%, CPT(80%) ~80%."""
    o = load(spec, drop_contaminated=True)
    apgrs, c50, c80 = [], [], []
    for seed in range(8):
        c = sweep(rnd(seed), o)
        apgrs.append(M.apgr(c))
        c50.append(M.cpt(c, 0.5))
        c80.append(M.cpt(c, 0.8))
    assert np.mean(apgrs) == pytest.approx(0.50, abs=0.02)
    assert np.mean(c50) == pytest.approx(0.50, abs=0.03)
    assert np.mean(c80) == pytest.approx(0.80, abs=0.03)
    # One random router's bootstrap interval covers the no-intelligence value.
    est = bootstrap_curve(router_scores(rnd(0), o), o, W, S, {"apgr": M.apgr}, n=300)["apgr"]
    assert est.low < 0.5 < est.high


@pytest.mark.parametrize(("spec", "gap", "oracle_share"), [
    ("routellm/mmlu", 0.12496, 0.17782),
    ("routellm/gsm8k", 0.22035, 0.29227),
])
def test_oracle_on_routellm_data(spec: str, gap: float, oracle_share: float, data_dir: Path) -> None:
    """The exact oracle curve reaches PGR x at share x * (q_strong - q_weak).

    The figures in our brief (MMLU 8.9% / 14.2%, GSM8K 14.6% / 23.4%) are x * oracle share (the share
    of prompts where only GPT-4 is right): PGR measured against the oracle's own best quality instead
    of GPT-4's, i.e. a straight line from all-weak to the oracle point. We check both readings.
    """
    o = load(spec, drop_contaminated=True)
    oc = M.oracle_curve(o, W, S)
    assert float(oc.q_strong - oc.q_weak) == pytest.approx(gap, abs=1e-5)
    assert M.cpt(oc, 0.5) == pytest.approx(0.5 * gap, abs=1e-4)
    assert M.cpt(oc, 0.8) == pytest.approx(0.8 * gap, abs=1e-4)
    share = M.oracle_pair_choice(o, W, S).mean()
    assert share == pytest.approx(oracle_share, abs=1e-5)
    brief = {"routellm/mmlu": (0.089, 0.142), "routellm/gsm8k": (0.146, 0.234)}[spec]
    assert (round(0.5 * share, 3), round(0.8 * share, 3)) == brief
    # The oracle's own curve: rises to that share, then is flat at its best quality.
    assert oc.strong_share[1] == pytest.approx(share)
    assert float(oc.quality[1] - oc.q_weak) == pytest.approx(share)


def test_lab_evaluate_rows_and_cli(data_dir: Path) -> None:
    o = load("routellm/gsm8k", drop_contaminated=True)
    rows = evaluate_pair(o, W, S, n_boot=200)
    names = [r.name for r in rows]
    assert names == [f"always {W}", f"always {S}", "random", "oracle"]
    weak, strong, random_row, oracle = rows
    assert weak.strong_share.value == 0 and strong.strong_share.value == 1
    assert strong.savings == 0 and strong.quality_retained == 1
    assert weak.quality.low < weak.quality.value < weak.quality.high
    assert random_row.apgr is not None and random_row.apgr.low < 0.5 < random_row.apgr.high
    assert oracle.quality.value >= strong.quality.value and oracle.cost.value < strong.cost.value
    assert oracle.strong_share.value == pytest.approx(M.oracle_pair_choice(o, W, S).mean())
    from gearshift.cli import main

    res = CliRunner().invoke(main, ["lab", "evaluate", "--outcomes", "routellm/gsm8k", "--drop-contaminated",
                                    "--n-boot", "50", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [r["name"] for r in out["rows"]] == names and out["cost_estimated"] is True
    res = CliRunner().invoke(main, ["lab", "evaluate", "--outcomes", "routellm/gsm8k", "--n-boot", "50"],
                             env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert "always strong" in res.output and "oracle" in res.output and "APGR" in res.output
    res = CliRunner().invoke(main, ["lab", "evaluate", "--outcomes", "routellm/gsm8k", "--router", "mine"])
    assert res.exit_code != 0 and "needs --config" in res.output


def test_lab_evaluate_with_a_configured_router(tmp_path: Path, data_dir: Path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(f"""
models:
  mixtral: {{provider: replay, price: {{input: 0.6, output: 0.6}}, replay: {{dataset: routellm/gsm8k, column: "{W}"}}}}
  gpt4: {{provider: replay, price: {{input: 10, output: 30}}, replay: {{dataset: routellm/gsm8k, column: {S}}}}}
routers:
  long-to-gpt4:
    kind: rules
    default: mixtral
    rules: [{{when: {{min_tokens: 60}}, model: gpt4}}]
""", encoding="utf-8")
    from gearshift.cli import main

    res = CliRunner().invoke(main, ["lab", "evaluate", "--outcomes", "routellm/gsm8k", "--router", "long-to-gpt4",
                                    "--config", str(cfg), "--n-boot", "50", "--json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)["rows"][-1]
    assert row["name"] == "long-to-gpt4" and row["kind"] == "replay" and row["apgr"] is None
    assert 0 < row["strong_share"]["value"] < 1
