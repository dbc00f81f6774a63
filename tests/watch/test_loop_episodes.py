"""The loop across a promotion (a new baseline) and across a failover of the alert duty (one episode)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from gearshift.store.sqlite import SQLiteStore
from gearshift.watch import Counters, WatchLoop
from tests.support.watch_helpers import batch, watch_config


def test_a_promotion_starts_a_new_baseline(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    store.write(batch(50, escalated_share=0.2))
    config = watch_config(router="cascade", window_requests=50, min_requests=20)
    loop = WatchLoop(store, config, Counters())
    first = asyncio.run(loop.check_once())
    assert first is not None and not first.drifted and first.status == "checked"

    # The new version escalates more, as its threshold says it should: no drift against the old baseline.
    store.promote("cascade", store.add_router_version("cascade", {"threshold": 0.7}, {}, "test"), by="test")
    store.write(batch(30, escalated_share=0.6))
    with caplog.at_level(logging.WARNING, logger="gearshift.watch"):
        pending = asyncio.run(loop.check_once())
    assert pending is not None and pending.status == "new baseline pending (30/50)"
    assert pending.metrics == [] and not pending.drifted
    assert pending.to_dict()["status"] == "new baseline pending (30/50)"
    assert "version 1 promoted" in caplog.text

    store.write(batch(20, escalated_share=0.6))
    report = asyncio.run(loop.check_once())
    assert report is not None and report.status == "checked" and not report.drifted
    assert report.baseline_n == 50 and "after version 1 of cascade was promoted" in report.baseline_source
    assert report.metric("escalation_rate").baseline == pytest.approx(0.6)

    # A later drift from the new baseline still alerts.
    store.write(batch(50, escalated_share=0.2))
    assert "escalation_rate" in {m.name for m in asyncio.run(loop.check_once()).drifted}  # type: ignore[union-attr]
    store.close()


def test_a_new_duty_holder_continues_the_episode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "t.db"
    seed = SQLiteStore(path)
    seed.write(batch(50, escalated_share=0.2) + batch(50, escalated_share=0.6))
    config = watch_config(window_requests=50, min_requests=20)
    a_store, b_store = SQLiteStore(path), SQLiteStore(path)
    a, b = WatchLoop(a_store, config, Counters()), WatchLoop(b_store, config, Counters())
    a.replica, b.replica = "host-a:1", "host-b:2"  # two replicas (one process here)
    assert a.counters is not None and b.counters is not None

    with caplog.at_level(logging.WARNING, logger="gearshift.watch"):
        asyncio.run(a.check_once())  # a takes the alert duty and announces the drift
        asyncio.run(b.check_once())  # b sees the drift too, sends nothing and counts nothing
    assert caplog.text.count("watch drift: escalation_rate") == 1
    assert a.counters.watch_alerts["escalation_rate"] == 1 and set(a.counters.watch_alerts.values()) == {1}
    assert b.counters.watch_alerts == {}
    assert b.report is not None and "escalation_rate" in {m.name for m in b.report.drifted}

    a_store.close()  # a goes away; b takes the duty at its next check
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gearshift.watch"):
        asyncio.run(b.check_once())
    assert "watch drift" not in caplog.text  # the episode goes on: no second alert
    assert b.counters.watch_alerts == {}
    state = b_store.watch_state("watch-alerts:*")
    assert state is not None and "escalation_rate" in state["active"] and state["last_sent"] is not None

    # The episode ends where it is: b sends the recovery.
    seed.write(batch(50, escalated_share=0.2))
    with caplog.at_level(logging.INFO, logger="gearshift.watch"):
        asyncio.run(b.check_once())
    assert "watch recovered: escalation_rate" in caplog.text
    assert "escalation_rate" not in (b_store.watch_state("watch-alerts:*") or {})["active"]
    # One episode in the store, raised by a and cleared by b: the takeover wrote no second one.
    episodes = [e for e in seed.watch_episodes() if e["metric"] == "escalation_rate"]
    assert len(episodes) == 1
    (e,) = episodes
    assert (e["raised_by"], e["cleared_by"]) == ("host-a:1", "host-b:2")
    assert e["watch"] == "watch-alerts:*" and e["rule"] == "abs change" and e["ended"] is not None
    assert e["baseline"] == pytest.approx(0.2) and e["value"] == pytest.approx(0.6) and e["end_value"] == pytest.approx(0.2)
    assert e["started"] < e["ended"] and e["bound"] == pytest.approx(0.1)
    b_store.close()
    seed.close()


def test_raising_and_clearing_writes_one_episode_with_its_times(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    store.write(batch(50, escalated_share=0.2) + batch(50, escalated_share=0.6))
    loop = WatchLoop(store, watch_config(window_requests=50, min_requests=20), Counters())
    raised = asyncio.run(loop.check_once())
    assert raised is not None and "escalation_rate" in {m.name for m in raised.drifted}
    asyncio.run(loop.check_once())  # still drifted: the same episode goes on
    (open_,) = [e for e in store.watch_episodes() if e["metric"] == "escalation_rate"]
    assert open_["started"] == raised.created and open_["ended"] is None and open_["raised_by"] == loop.replica
    store.write(batch(50, escalated_share=0.2))
    cleared = asyncio.run(loop.check_once())
    assert cleared is not None and "escalation_rate" not in {m.name for m in cleared.drifted}
    (e,) = [e for e in store.watch_episodes() if e["metric"] == "escalation_rate"]
    assert (e["started"], e["ended"]) == (raised.created, cleared.created)
    # A range that ends before the episode starts, or starts after it ended, does not hold it.
    assert store.watch_episodes(since=cleared.created + 1) == [] and store.watch_episodes(until=raised.created) == []
    assert len(store.watch_episodes(since=raised.created, until=cleared.created)) == len(store.watch_episodes())
    store.close()


def test_a_holder_that_dies_before_saving_its_state_leaves_one_episode(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "t.db"
    seed = SQLiteStore(path)
    seed.write(batch(50, escalated_share=0.2) + batch(50, escalated_share=0.6))
    config = watch_config(window_requests=50, min_requests=20)
    a_store = SQLiteStore(path)
    a = WatchLoop(a_store, config, Counters())
    asyncio.run(a.check_once())
    a_store.close()
    seed.save_watch_state("watch-alerts:*", {"active": {}, "last_sent": None})  # as if a died before its state
    b_store = SQLiteStore(path)
    b = WatchLoop(b_store, config, Counters())
    with caplog.at_level(logging.WARNING, logger="gearshift.watch"):
        asyncio.run(b.check_once())
    assert "watch drift: escalation_rate" in caplog.text  # b announces it again (it could not know)...
    (e,) = [e for e in seed.watch_episodes() if e["metric"] == "escalation_rate"]
    assert e["raised_by"] == a.replica and e["ended"] is None  # ...but the store keeps a's one episode
    b_store.close()
    seed.close()
