"""The dashboard's figures from a store: empty installs, buckets, and what a rollback restores."""

from __future__ import annotations

from pathlib import Path

import pytest

from gearshift.store.sqlite import SQLiteStore
from gearshift.trace import Call
from gearshift.ui import data
from tests.support.configs import load_config
from tests.support.traces import trace
from tests.support.ui_helpers import ui_config_file


def test_a_new_install_has_empty_pages_not_errors(tmp_path: Path) -> None:
    config = load_config(ui_config_file(tmp_path))
    store = SQLiteStore(tmp_path / "traces.db")
    o = data.overview(store, config, 24)
    assert o["summary"]["requests"] == 0 and o["series"] == [] and o["store_traces"] == 0
    assert o["quality"]["retained"] is None and o["feedback"] == {"count": 0, "mean": None}
    assert data.traces(store, {})["traces"] == []
    assert data.watch(store, config)["report"] is None
    assert data.ab(store, config, 24)["arms"] == [] and "at least two arms" in data.ab(store, config, 24)["empty"]
    assert data.keys(store, config, 24)["clients"] == []
    assert [r["versions"] for r in data.routers(store, config, 24)["routers"]] == [[], [], [], []]
    assert data.reports(None)["reports"] == [] and data.reports(tmp_path / "none")["reports"] == []


def test_overview_buckets_add_up_to_the_summary(tmp_path: Path) -> None:
    config = load_config(ui_config_file(tmp_path))
    store = SQLiteStore(tmp_path / "traces.db")
    now = 1_800_000_000.0
    rows = [trace("gearshift/cascade", created=now - 3600 * 20 + 600 * i) for i in range(100)]
    for t in rows[::4]:
        t.calls.append(Call(model="gpt-4-1106", role="escalation", input_tokens=12, output_tokens=30, cost_usd=0.001))
    store.write(rows)
    o = data.overview(store, config, 24, now=now)
    assert o["bucket_seconds"] == 3600 and len(o["series"]) <= data.POINTS
    assert sum(p["requests"] for p in o["series"]) == o["summary"]["requests"] == 100
    assert sum(p["spend_usd"] for p in o["series"]) == pytest.approx(o["summary"]["spend_usd"])
    assert sum(p["counterfactual_usd"] for p in o["series"]) == pytest.approx(o["summary"]["counterfactual_usd_estimate"])
    assert data.overview(store, config, 1, now=now)["store_traces"] == 100  # a quiet hour in a used store


def test_a_rollback_restores_the_version_promoted_before_the_active_one() -> None:
    versions = [{"version": 1, "active": False, "promoted_at": 10.0}, {"version": 2, "active": False, "promoted_at": 30.0},
                {"version": 3, "active": True, "promoted_at": 40.0}, {"version": 4, "active": False, "promoted_at": None}]
    assert data.rollback_target(versions)["version"] == 2  # type: ignore[index]
    assert data.rollback_target(versions[2:]) is None
    assert data.bucket_seconds(1) == 180 and data.bucket_seconds(24) == 3600 and data.bucket_seconds(0.01) == 60
