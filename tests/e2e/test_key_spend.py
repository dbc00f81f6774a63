"""Spend per key and team: keys made with `gearshift keys`, traffic through a shadowing gateway, then
`gearshift traces --by key|team`, `lab check --key`, `keys list` and /metrics, checked against the store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gearshift import plan
from gearshift.cli import main
from gearshift.gateway.server import running
from gearshift.store.view import PairEstimate
from tests.support.fake_upstream import FakeUpstream
from tests.support.keys import USER, ask, drained, http, keyed_data, write_config


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return result.stdout


def test_spend_savings_and_quality_retained_per_key_and_team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeUpstream.running() as up:
        up.delay(0.0, times=None, model="fake-large", text="So: #### 42")
        routers = {"auto": {"kind": "fixed", "model": "small", "shadow": {"rate": 1.0}},
                   "strong": {"kind": "fixed", "model": "large"}}
        path = write_config(keyed_data(up.url, tmp_path, monkeypatch, routers=routers), tmp_path / "gs.yaml")
        # Keys made by the CLI, the key printed alone on stdout.
        key_a = cli("keys", "create", "--config", str(path), "--name", "a", "--team", "search").strip()
        key_b = cli("keys", "create", "--config", str(path), "--name", "b", "--team", "ads", "--usd-day", "5").strip()
        with running(plan.load(path)) as gw:
            for i in range(3):  # the cheap answer's final number agrees with the reference's 42
                assert ask(gw.url, key_a, text=f"question {i}: 40 + 2 #### 42").status == 200
            for i in range(2):  # ... and here it does not (7 against 42)
                assert ask(gw.url, key_b, text=f"question {i}: 3 + 4 #### 7").status == 200
            assert ask(gw.url, USER, model="strong").status == 200
            deadline = time.monotonic() + 20
            while gw.gateway.shadower.done < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            drained(gw)
            metrics = http.request("GET", gw.url + "/metrics").data.decode()
            rows = list(gw.gateway.store.traces())
    assert len(rows) == 6

    def spend(field: str, owner: str | None) -> float:
        return sum(r["cost_usd"] for r in rows if r[field] == owner)

    by_key = {g["key"]: g for g in json.loads(cli("traces", "--config", str(path), "--by", "key", "--json"))}
    assert {k: g["requests"] for k, g in by_key.items()} == {"a": 3, "b": 2, "user": 1}
    for name in ("a", "b", "user"):
        assert by_key[name]["spend_usd"] == pytest.approx(spend("client", name))
    # Always-large for a's and b's requests costs more than small did; the user's went to large already.
    assert by_key["a"]["savings_usd_estimate"] > 0 and by_key["user"]["savings_usd_estimate"] == pytest.approx(0)
    assert (by_key["a"]["pairs"], by_key["a"]["quality_retained"]) == (3, 1.0)
    assert (by_key["b"]["pairs"], by_key["b"]["quality_retained"], by_key["b"]["lower_bound"]) == (2, 0.0, True)
    assert by_key["b"]["quality_retained"] == PairEstimate.of_traces(r for r in rows if r["client"] == "b").retained
    assert (by_key["user"]["pairs"], by_key["user"]["quality_retained"]) == (0, None)

    by_team = {g["team"]: g for g in json.loads(cli("traces", "--config", str(path), "--by", "team", "--json"))}
    assert {t: g["requests"] for t, g in by_team.items()} == {"search": 3, "ads": 2, None: 1}
    assert by_team["ads"]["spend_usd"] == pytest.approx(spend("team", "ads"))

    check = json.loads(cli("lab", "check", "--config", str(path), "--key", "a", "--n-boot", "50", "--json"))
    assert check["key"] == by_key["a"]
    listed = {k["name"]: k for k in json.loads(cli("keys", "list", "--config", str(path), "--json"))}
    assert listed["b"]["spend_month_usd"] == pytest.approx(spend("client", "b"))
    assert listed["b"]["usd_day"] == 5 and "hash" not in listed["b"]
    # /metrics: requests and spend by team (bounded labels: see watch/prometheus.py TEAM_LABELS).
    assert 'gearshift_team_requests_total{team="search"} 3' in metrics
    assert 'gearshift_team_requests_total{team="none"} 1' in metrics
    [line] = [x for x in metrics.splitlines() if x.startswith('gearshift_spend_usd_total{team="ads"}')]
    assert float(line.split()[-1]) == pytest.approx(spend("team", "ads"))
