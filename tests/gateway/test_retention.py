"""Trace retention: the gateway prunes on its own when `store.retention_days` is set; `gearshift prune` on demand."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gearshift.config import load_config
from gearshift.gateway.server import running
from gearshift.store import open_store
from tests.support.traces import trace

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def config_path(tmp_path: Path, data_dir: Path) -> Path:
    base = yaml.safe_load((REPO / "examples" / "replay-gsm8k.yaml").read_text())
    base["store"] = {"url": f"sqlite:///{tmp_path / 'traces.db'}", "retention_days": 30}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def gearshift(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gearshift.cli", *args], capture_output=True, text=True)


def test_the_gateway_prunes_past_the_retention_and_the_cli_on_demand(config_path: Path) -> None:
    config = load_config(config_path)
    now = time.time()
    store = open_store(config.store, config.base_dir)
    store.write([trace(created=now - 45 * 86400), trace(created=now - 31 * 86400), trace(created=now - 2 * 86400),
                 trace(created=now)])
    store.close()
    with running(config) as gw:
        deadline = time.monotonic() + 10
        while gw.gateway.retention.pruned < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.gateway.retention.pruned == 2 and gw.gateway.store.count() == 2
    out = gearshift("prune", "--config", str(config_path), "--older-than-days", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "deleted 1 traces older than 1 days; 1 remain"


def test_prune_needs_a_retention(config_path: Path) -> None:
    data = yaml.safe_load(config_path.read_text())
    del data["store"]["retention_days"]
    config_path.write_text(yaml.safe_dump(data))
    out = gearshift("prune", "--config", str(config_path))
    assert out.returncode == 2 and "give --older-than-days, or set store.retention_days" in out.stderr
    bad = gearshift("prune", "--config", str(config_path), "--older-than-days", "0")
    assert bad.returncode == 2 and "--older-than-days" in bad.stderr
