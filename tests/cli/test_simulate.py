"""`gearshift lab simulate` on a small stream: a random router in observe, a few hundred GSM8K prompts."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from gearshift.cli import main
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W


def test_simulate_prints_each_run_and_writes_the_json_and_the_plot(tmp_path: Path, data_dir: Path) -> None:
    config = {
        "models": {
            "mixtral": {"provider": "replay", "replay": {"dataset": "routellm/gsm8k", "column": W},
                        "price": {"input": 0.6, "output": 0.6}, "rank": 1},
            "gpt-4": {"provider": "replay", "replay": {"dataset": "routellm/gsm8k", "column": S},
                      "price": {"input": 10, "output": 30}, "rank": 10},
        },
        "routers": {"coin": {"kind": "random", "weights": {"mixtral": 0.5, "gpt-4": 0.5}, "mode": "observe",
                             "shadow": {"rate": 0.5, "compare": "recorded", "explore": "mixtral"},
                             "proof": {"min_pairs": 50, "auto_promote": True, "every_hours": 1}}},
    }
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(config))
    out = CliRunner().invoke(main, ["lab", "simulate", "--outcomes", "routellm/gsm8k", "--config", str(path),
                                    "--seeds", "2", "--limit", "150", "--json", str(tmp_path / "s.json"),
                                    "--plot", str(tmp_path / "s.png")])
    assert out.exit_code == 0, out.output
    assert "coin on routellm/gsm8k: 2 runs; promoted in 0, demotions 0; floor coverage at 95%: 100%" in out.output
    # Observing, the strong model served every request: no savings, all of its quality.
    assert out.output.count("(savings 0.0%, net -") == 2 and out.output.count("quality 100.0% of always-strong") == 2
    assert out.output.count("of always-strong; never promoted") == 2
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["seeds"] == 2 and data["promoted_runs"] == 0 and [r["requests"] for r in data["runs"]] == [150, 150]
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_simulate_names_the_router_to_pick_when_none_observes(tmp_path: Path, data_dir: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump({"models": {"m": {"provider": "replay", "rank": 1, "price": {"input": 1, "output": 1},
                                                     "replay": {"dataset": "routellm/gsm8k", "column": W}}},
                                    "routers": {"r": {"kind": "fixed", "model": "m"}}}))
    out = CliRunner().invoke(main, ["lab", "simulate", "--outcomes", "routellm/gsm8k", "--config", str(path)])
    assert out.exit_code == 2 and "name the router to simulate (--router)" in out.output
