"""A trained classifier router served by the gateway, end to end over real sockets.

Train on GSM8K prompts -> save the artifact -> a config points a classifier router at it, with
replay models answering from the recorded responses -> the official openai client sends held-out
prompts -> every answer comes from the model the offline router chose for that prompt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openai
import yaml

from gearshift.config import parse_config
from gearshift.gateway.server import running
from gearshift.lab.train import TrainSettings, fit, model_of, pair_scores
from gearshift.learned import artifact
from gearshift.learned.features import FeatureSpec
from gearshift.outcomes import datasets
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W


def test_gateway_serves_a_trained_classifier(tmp_path: Path, data_dir: Path) -> None:
    o = datasets.load("routellm/gsm8k", drop_contaminated=True)
    perm = np.random.default_rng(3).permutation(len(o))
    train, held_out = o.subset(np.sort(perm[:500])), o.subset(np.sort(perm[500:560]))
    a = fit(train, TrainSettings(features=FeatureSpec(word_bits=15, char_bits=15)))
    artifact.save(a, tmp_path / "router.json")
    offline = pair_scores(model_of(a), held_out)
    threshold = float(np.median(offline))  # about half the held-out prompts go each way

    config = parse_config(yaml.safe_load(yaml.safe_dump({
        "models": {
            "mixtral": {"provider": "replay", "replay": {"dataset": "routellm/gsm8k", "column": W},
                        "price": {"input": 0.6, "output": 0.6}, "rank": 1},
            "gpt-4": {"provider": "replay", "replay": {"dataset": "routellm/gsm8k", "column": S},
                      "price": {"input": 10, "output": 30}, "rank": 10},
        },
        "routers": {"gearshift/smart": {"kind": "classifier", "artifact": "router.json", "threshold": threshold}},
        "store": {"url": f"sqlite:///{tmp_path / 'traces.db'}", "flush_interval": 0.05},
        "server": {"open": True},
    })), base_dir=tmp_path)

    with running(config) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        served = []
        for prompt in held_out.prompts:
            raw = client.chat.completions.with_raw_response.create(
                model="gearshift/smart", messages=[{"role": "user", "content": str(prompt)}])
            body = raw.parse()
            served.append((raw.headers["x-gearshift-model"], raw.headers["x-gearshift-reason"],
                           body.choices[0].message.content, body.model_extra["gearshift_replay"]["quality"]))

    expected = ["gpt-4" if s >= threshold else "mixtral" for s in offline]
    assert [m for m, *_ in served] == expected
    assert {"gpt-4", "mixtral"} == set(expected)
    for (model, reason, content, quality), i in zip(served, range(len(held_out)), strict=True):
        assert reason.startswith("classifier: score")
        col = held_out.index(W if model == "mixtral" else S)
        assert content == held_out.responses[i, col]  # the recorded answer of the chosen model
        assert quality == held_out.quality[i, col]
