"""`gearshift lab train` then `gearshift lab calibrate` writing the threshold into the config."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from gearshift.cli import main
from gearshift.cli.train import set_router_key
from gearshift.config import load_config
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W
from gearshift.plan import build_routers

CONFIG = f"""\
# gateway config (comments must survive calibration)
models:
  mixtral:
    provider: replay
    replay: {{dataset: routellm/gsm8k, column: {W}}}
    price: {{input: 0.6, output: 0.6}}
    rank: 1
  gpt-4:
    provider: replay
    replay: {{dataset: routellm/gsm8k, column: {S}}}
    price: {{input: 10, output: 30}}
    rank: 10
routers:
  smart:
    kind: classifier   # learned router
    artifact: router.json
  always-strong:
    kind: fixed
    model: gpt-4
"""


def test_train_then_calibrate_writes_the_threshold(tmp_path: Path, data_dir: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "router.json"
    res = runner.invoke(main, ["lab", "train", "--outcomes", "routellm/gsm8k", "--drop-contaminated", "--sample", "400",
                               "--holdout", "0.25", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "hold-out (100 prompts): APGR" in res.output
    cfg = tmp_path / "gearshift.yaml"
    cfg.write_text(CONFIG)

    res = runner.invoke(main, ["lab", "calibrate", "--config", str(cfg), "--router", "smart", "--outcomes",
                               "routellm/gsm8k", "--drop-contaminated", "--share", "0.3"])
    assert res.exit_code == 0, res.output
    assert "wrote routers.smart.threshold" in res.output and "edited in place" in res.output
    text = cfg.read_text()
    assert "# gateway config (comments must survive calibration)" in text and "# learned router" in text
    router = build_routers(load_config(cfg))["smart"]
    written = yaml.safe_load(text)["routers"]["smart"]["threshold"]
    assert router.threshold == written
    # Calibrating again replaces the line instead of adding a second one.
    res = runner.invoke(main, ["lab", "calibrate", "--config", str(cfg), "--router", "smart", "--outcomes",
                               "routellm/gsm8k", "--drop-contaminated", "--floor", "0.9", "--method", "exact"])
    assert res.exit_code == 0, res.output
    assert cfg.read_text().count("threshold:") == 1
    # Clear refusals.
    res = runner.invoke(main, ["lab", "calibrate", "--config", str(cfg), "--router", "always-strong",
                               "--outcomes", "routellm/gsm8k", "--share", "0.3"])
    assert res.exit_code != 0 and "has no threshold" in res.output
    res = runner.invoke(main, ["lab", "train", "--outcomes", "routerbench/mbpp", "--out", str(tmp_path / "x.json")])
    assert res.exit_code != 0 and "give --weak and --strong, or --form multi" in res.output


def test_set_router_key_falls_back_to_a_full_rewrite(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text('{"models": {"a": {"provider": "openai", "price": {"input": 1, "output": 1}}}, '
                   '"routers": {"r": {"kind": "classifier", "artifact": "x.json"}}}\n')
    how = set_router_key(cfg, "r", "threshold", 0.25)
    assert "rewritten" in how
    assert yaml.safe_load(cfg.read_text())["routers"]["r"] == {"kind": "classifier", "artifact": "x.json",
                                                              "threshold": 0.25}


def test_train_records_a_learning_curve(tmp_path: Path, data_dir: Path) -> None:
    from gearshift.learned import artifact

    runner = CliRunner()
    out = tmp_path / "router.json"
    res = runner.invoke(main, ["lab", "train", "--outcomes", "routellm/gsm8k", "--drop-contaminated", "--sample", "800",
                               "--holdout", "0.25", "--learning-curve", "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = artifact.load(out).header["metrics"]
    curve = m["learning_curve"]
    assert [p["share"] for p in curve] == [0.25, 0.5, 0.75, 1.0]
    sizes = [p["train_prompts"] for p in curve]
    assert sizes == [150, 300, 450, 600] and m["train_prompts"] == 600
    # The full-share point is the hold-out fit itself: same prompts, same router, same figures.
    assert abs(curve[-1]["apgr"] - m["apgr"]["value"]) < 1e-9
    # Each point is its own fit on the same hold-out (a hold-out this small is noisy: no order asserted).
    assert len({round(p["apgr"], 9) for p in curve}) == 4
    assert "learning curve: trained on 150 prompts (25%): APGR" in res.output and "are noise" in res.output
    res = runner.invoke(main, ["lab", "train", "--outcomes", "routellm/gsm8k", "--sample", "200", "--holdout", "0",
                               "--learning-curve", "--out", str(tmp_path / "x.json")])
    assert res.exit_code != 0 and "give --holdout > 0" in res.output


def test_train_warm_starts_from_a_prior_and_refuses_a_logistic_one(tmp_path: Path, data_dir: Path) -> None:
    runner = CliRunner()
    prior, old, out = tmp_path / "prior.json", tmp_path / "old.json", tmp_path / "router.json"
    res = runner.invoke(main, ["lab", "train", "--outcomes", "routerbench/arc_challenge", "--weak", "mistralai/mixtral-8x7b-chat",
                               "--strong", S, "--no-metadata", "--holdout", "0", "--learner", "ridge",
                               "--out", str(prior)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["lab", "train", "--outcomes", "routellm/gsm8k", "--sample", "200", "--holdout", "0",
                               "--prior", str(prior), "--out", str(out)])  # --prior picks the ridge learner
    assert res.exit_code == 0, res.output
    assert f"warm start from {prior}" in res.output and "prior weight" in res.output
    res = runner.invoke(main, ["lab", "train", "--outcomes", "routellm/gsm8k", "--sample", "200", "--holdout", "0",
                               "--learner", "logistic", "--out", str(old)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["lab", "train", "--outcomes", "routellm/gsm8k", "--sample", "200", "--holdout", "0",
                               "--prior", str(old), "--out", str(out)])
    assert res.exit_code != 0 and "ridge learner" in res.output
