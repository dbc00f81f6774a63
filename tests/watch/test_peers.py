"""Worker processes' counts through files: totals over every worker, dead ones included; gauges over
live ones; the same sums whichever worker adds them up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gearshift.trace import Call, Trace
from gearshift.watch import Counters
from gearshift.watch.peers import STALE_SECONDS, Peers, combine

NOW = 1_000_000.0


def snapshot(pid: int, requests: int, cost: float, *, pending: int = 0, trips: int = 0, state: str = "closed",
             failures: int = 0, at: float = NOW) -> dict[str, Any]:
    c = Counters()
    for _ in range(requests):
        t = Trace(router="auto", requested_model="auto", final_model="small", latency_ms=20.0)
        t.calls.append(Call(model="small", role="primary", input_tokens=10, output_tokens=4, cost_usd=cost))
        c.observe(t)
    c.in_flight = pending
    return {"pid": pid, "time": at, "counters": c.state(), "totals": {"traces_written": requests},
            "gauges": {"traces_pending": pending},
            "circuits": {"small": {"state": state, "trips": trips, "consecutive_failures": failures}}}


def test_files_carry_each_workers_latest_snapshot(tmp_path: Path) -> None:
    a, b = Peers(tmp_path), Peers(tmp_path)  # two workers (one pid here: the random part keeps them apart)
    a.publish(snapshot(1, 3, 0.1))
    b.publish(snapshot(2, 1, 0.1))
    b.publish(snapshot(2, 4, 0.1))  # replaces b's file
    (tmp_path / "worker-9-junk.json").write_text("{not json")  # a half-written file is skipped
    seen = a.others()
    assert [s["totals"]["traces_written"] for s in seen] == [4]
    assert sorted(p.name.startswith("worker-") for p in tmp_path.iterdir()) == [True, True, True]
    assert not list(tmp_path.glob("*.tmp"))


def test_totals_keep_dead_workers_gauges_count_live_ones() -> None:
    own = snapshot(10, 5, 0.01, pending=2, failures=1)
    live = snapshot(11, 7, 0.01, pending=3, trips=1, state="open", failures=4, at=NOW - 1)
    dead = snapshot(12, 100, 0.01, pending=50, trips=2, failures=9, at=NOW - STALE_SECONDS - 1)
    c = combine(own, [live, dead], now=NOW)
    assert sum(c.counters.requests.values()) == 112
    assert c.totals == {"traces_written": 112}
    assert c.gauges == {"traces_pending": 5}
    assert c.counters.in_flight == 5
    assert c.counters.tokens[("small", "auto", "input")] == 1120
    assert c.counters.latency[("auto",)][-2:] == [0, pytest.approx(112 * 0.02)]  # +Inf bucket, then the sum
    assert c.circuits == {"small": {"state": "open", "trips": 3, "consecutive_failures": 4}}
    assert c.workers == 2


def test_every_worker_adds_in_the_same_order() -> None:
    """Float sums depend on the order: each worker must get the very same total, or a counter read
    from one worker then another could step down a hair, which Prometheus reads as a reset."""
    s = [snapshot(pid, 1, cost) for pid, cost in ((3, 0.1), (1, 0.2), (2, 0.3))]
    totals = {combine(s[i], s[:i] + s[i + 1:], now=NOW).counters.cost[("small", "primary")] for i in range(3)}
    assert len(totals) == 1
