"""A daily shadow budget shared by two replicas on one PostgreSQL store holds through a burst: each
reserves a pair's estimated cost in the store before calling the reference, so neither spends the
whole budget before it hears of the other. Traffic is GSM8K replayed from recorded answers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gearshift.config import load_config
from gearshift.gateway.server import running
from gearshift.outcomes.datasets import load
from tests.support.gateway_helpers import replay_config_file, send, settle


def test_a_shared_shadow_budget_holds_in_a_burst(tmp_path: Path, data_dir: Path, pg_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEARSHIFT_DATA", str(data_dir))
    budget = 0.03  # a few GPT-4 answers to GSM8K prompts
    path = replay_config_file(tmp_path, {
        "gearshift/rnd": {"kind": "fixed", "model": "mixtral-8x7b",
                          "shadow": {"rate": 1.0, "compare": "final_answer", "daily_budget_usd": budget}},
    }, store={"url": pg_url, "password_env": "GEARSHIFT_TEST_PGPASSWORD", "flush_interval": 0.05})
    config = load_config(path)
    prompts = list(load("routellm/gsm8k").prompts[:80])
    with running(config) as a, running(config) as b:
        with ThreadPoolExecutor(2) as pool:  # both replicas at once, 8 requests in flight each
            list(pool.map(lambda i: send((a, b)[i], prompts[i::2], "gearshift/rnd"), range(2)))
        settle(a)
        settle(b)
        rows = list(a.gateway.store.traces())
        shadowers = [gw.gateway.shadower for gw in (a, b)]
    costs = [c["cost_usd"] for r in rows for c in r["calls"] if c["role"] == "shadow"]
    dropped = sum(s.dropped["budget"] for s in shadowers)
    assert len(rows) == 80 and costs and dropped > 0
    assert sum(s.done for s in shadowers) == len(costs) and len(costs) + dropped == 80
    assert sum(costs) <= budget + max(costs)
