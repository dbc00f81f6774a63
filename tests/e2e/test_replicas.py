"""Two gateway replicas sharing one PostgreSQL store (a real server on 127.0.0.1): what one records,
the lab and the other see; a version promoted once applies in both. Traffic is GSM8K replayed from
the real recorded answers of Mixtral-8x7B and GPT-4-1106."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gearshift.config import load_config
from gearshift.gateway.server import running
from gearshift.lab.recalibrate import recalibrate
from gearshift.outcomes.datasets import load
from tests.support.gateway_helpers import promote_and_wait, replay_config_file, send, settle


@pytest.fixture
def config_path(tmp_path: Path, data_dir: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GEARSHIFT_DATA", str(data_dir))
    return replay_config_file(tmp_path, {
        "gearshift/rnd": {"kind": "random", "weights": {"mixtral-8x7b": 0.7, "gpt-4-1106": 0.3},
                          "shadow": {"rate": 1.0, "compare": "final_answer", "explore": "mixtral-8x7b"}},
    }, store={"url": pg_url, "password_env": "GEARSHIFT_TEST_PGPASSWORD", "flush_interval": 0.05})


def test_two_replicas_share_traces_pairs_and_promoted_versions(config_path: Path) -> None:
    config = load_config(config_path)
    prompts = list(load("routellm/gsm8k").prompts[:240])
    with running(config) as a, running(config) as b:
        send(a, prompts[:120], "gearshift/rnd")
        send(b, prompts[120:], "gearshift/rnd")
        settle(a)
        settle(b)
        # Either replica's store sees every request and every shadow pair.
        assert a.gateway.store.count() == b.gateway.store.count() == 240
        r = recalibrate(config, a.gateway.store, "gearshift/rnd", floor=0.9, min_pairs=100)
        assert r.pairs == 240 and r.version == 1
        routers = [gw.gateway.routers["gearshift/rnd"] for gw in (a, b)]
        before = routers[0].threshold
        promote_and_wait(config_path, "gearshift/rnd", 1,
                         lambda: all(x.threshold != before for x in routers))
        assert [x.threshold for x in routers] == [pytest.approx(r.calibration.threshold)] * 2
    # The CLI reads the same database (its password from the environment, as the gateways did).
    out = subprocess.run([sys.executable, "-m", "gearshift.cli", "traces", "--config", str(config_path), "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["requests"] == 240


def test_an_unreachable_store_is_a_clear_cli_error(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEARSHIFT_TEST_PGPASSWORD")
    out = subprocess.run([sys.executable, "-m", "gearshift.cli", "traces", "--config", str(config_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("error: store postgresql://postgres@127.0.0.1:") and "cannot connect" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_daily_shadow_budget_holds_across_replicas(config_path: Path) -> None:
    data = yaml.safe_load(config_path.read_text())
    data["routers"]["gearshift/rnd"]["shadow"]["daily_budget_usd"] = 1e-9
    data["server"]["shadow_spend_sync_seconds"] = 0.1
    config_path.write_text(yaml.safe_dump(data))
    config = load_config(config_path)
    prompts = list(load("routellm/gsm8k").prompts[:5])
    with running(config) as a, running(config) as b:
        send(a, prompts[:1], "gearshift/rnd")
        settle(a)  # replica a spent the budget, and its trace is in the shared store
        deadline = time.monotonic() + 10
        while b.gateway.shadower.spent_today("gearshift/rnd") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b.gateway.shadower.spent_today("gearshift/rnd") == pytest.approx(
            a.gateway.shadower.spent_today("gearshift/rnd"))
        send(b, prompts[1:], "gearshift/rnd")
        settle(b)
        assert b.gateway.shadower.dropped["budget"] == 4 and b.gateway.shadower.done == 0


def test_scheduled_recalibration_runs_in_one_replica(config_path: Path) -> None:
    data = yaml.safe_load(config_path.read_text())
    data["routers"]["gearshift/rnd"]["recalibrate"] = {"floor": 0.9, "every_hours": 0.5 / 3600, "min_pairs": 50}
    config_path.write_text(yaml.safe_dump(data))
    config = load_config(config_path)
    prompts = list(load("routellm/gsm8k").prompts[:120])
    with running(config) as a, running(config) as b:
        send(a, prompts, "gearshift/rnd")
        settle(a)
        loops = [a.gateway.versions, b.gateway.versions]
        # Runs made before the pairs were stored (while sending, on a slow machine) store nothing: wait for
        # three runs after them.
        settled = sum(v.recalibrations for v in loops)
        deadline = time.monotonic() + 20
        while sum(v.recalibrations for v in loops) < settled + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        versions = a.gateway.store.router_versions("gearshift/rnd")
        runs = sorted(v.recalibrations for v in loops)
    assert runs[0] == 0 and runs[1] >= 3  # one replica leads; the other never recalibrated
    # Every stored version is the leader's (a run before enough pairs were stored stores none).
    assert 1 <= len(versions) <= runs[1] and {v["created_by"] for v in versions} == {"gateway schedule"}
