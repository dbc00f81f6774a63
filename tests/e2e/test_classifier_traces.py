"""Training on the gateway's own shadow pairs: traffic -> traces -> `gearshift lab train --traces`."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
import yaml
from click.testing import CliRunner

from gearshift.cli import main
from gearshift.config import load_config
from gearshift.gateway.server import running
from gearshift.learned import artifact
from gearshift.outcomes import datasets
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W


def test_train_on_shadow_pairs_from_traces(tmp_path: Path, data_dir: Path) -> None:
    cfg = tmp_path / "gearshift.yaml"
    cfg.write_text(yaml.safe_dump({
        "models": {
            "mixtral": {"provider": "replay", "replay": {"dataset": "routellm/gsm8k", "column": W},
                        "price": {"input": 0.6, "output": 0.6}, "rank": 1},
            "gpt-4": {"provider": "replay", "replay": {"dataset": "routellm/gsm8k", "column": S},
                      "price": {"input": 10, "output": 30}, "rank": 10},
        },
        "routers": {"gearshift/auto": {"kind": "random", "weights": {"mixtral": 0.5, "gpt-4": 0.5},
                                       "shadow": {"rate": 1.0, "compare": "final_answer", "explore": "mixtral"}}},
        "store": {"url": "sqlite:///traces.db", "flush_interval": 0.05},
        "server": {"shadow_workers": 8, "open": True},
    }))
    prompts = list(datasets.load("routellm/gsm8k", drop_contaminated=True).prompts[:160])
    with running(load_config(cfg)) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda p: client.chat.completions.create(
                model="gearshift/auto", messages=[{"role": "user", "content": str(p)}]), prompts))
        g = gw.gateway
        deadline = time.monotonic() + 60
        while (g.shadower.queue.qsize() or g.writer.pending()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)

    out = tmp_path / "router.json"
    res = CliRunner().invoke(main, ["lab", "train", "--traces", str(cfg), "--weak", "mixtral", "--strong", "gpt-4",
                                    "--holdout", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    a = artifact.load(out)
    assert a.header["models"] == ["mixtral", "gpt-4"]  # the config's names: it serves in this gateway as is
    assert a.header["training"]["outcomes"].startswith("traces of")
    assert 100 <= a.header["training"]["prompts"] <= len(prompts)
    assert np.count_nonzero(a.arrays["W"]) > 0
    res = CliRunner().invoke(main, ["lab", "train", "--outcomes", "routellm/gsm8k", "--traces", str(cfg),
                                    "--out", str(out)])
    assert res.exit_code != 0 and "exactly one of --outcomes or --traces" in res.output
