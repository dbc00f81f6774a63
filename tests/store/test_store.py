"""Both trace stores keep the same contract: SQLite (a file) and PostgreSQL (a real server on 127.0.0.1)."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gearshift.config import StoreConfig
from gearshift.errors import StoreError
from gearshift.store import TraceStore, open_store
from gearshift.store.view import TraceView
from gearshift.store.writer import TraceWriter
from gearshift.trace import Call, Trace
from tests.support.traces import trace

PW_ENV = "GEARSHIFT_TEST_PGPASSWORD"


@pytest.fixture(params=["sqlite", "postgres"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    if request.param == "sqlite":
        return StoreConfig(url=f"sqlite:///{tmp_path / 'traces.db'}")
    return StoreConfig(url=request.getfixturevalue("pg_url"), password_env=PW_ENV)


@pytest.fixture
def store(store_config: StoreConfig) -> TraceStore:
    s = open_store(store_config)
    yield s
    s.close()


def test_traces_round_trip_with_calls_and_filters(store: TraceStore) -> None:
    a, b, c = trace(created=100.0), trace("gearshift/other", created=200.0), trace(created=300.0, arm="x")
    b.calls.append(Call(model="large", role="fallback", status=502, error="upstream 502", attempt=2))
    store.write([c, a, b])
    rows = list(store.traces())
    assert [r["id"] for r in rows] == [a.id, b.id, c.id]  # oldest first
    first = rows[0]
    assert first["route"] == ["small", "large"] and first["metadata"] == {"tier": "free"}
    assert first["verdicts"] == [{"gate": "length", "passed": True}] and first["streamed"] is False
    assert first["calls"] == [{"idx": 0, "model": "small", "role": "primary", "input_tokens": 12, "output_tokens": 3,
                               "usage_estimated": False, "cost_usd": 0.0001, "latency_ms": 40.5, "status": 200,
                               "error": None, "attempt": 1, "response": "4", "truncated": False}]
    assert first["response"] == "4" and first["response_truncated"] is False  # stored once, on the call
    assert [x["role"] for x in rows[1]["calls"]] == ["primary", "fallback"] and rows[1]["calls"][1]["status"] == 502
    assert first["created"] == 100.0 and first["cost_usd"] == pytest.approx(0.0001)
    assert [r["id"] for r in store.traces(since=150.0)] == [b.id, c.id]
    assert [r["id"] for r in store.traces(router="gearshift/other")] == [b.id]
    assert [r["id"] for r in store.traces(limit=2)] == [a.id, b.id]
    assert store.count() == 3 and store.has_trace(b.id) and not store.has_trace("nope")


def test_a_trace_written_again_is_updated_not_duplicated(store: TraceStore) -> None:
    t = trace()
    store.write([t])
    shadowed = copy.copy(t)
    shadowed.calls = [*t.calls, Call(model="large", role="shadow", cost_usd=0.002, response="4")]
    shadowed.verdicts = [*t.verdicts, {"gate": "shadow_agreement", "passed": True}]
    shadowed.shadowed = True
    store.write([shadowed])
    (row,) = list(store.traces())
    assert store.count() == 1 and row["shadowed"] is True
    assert [c["role"] for c in row["calls"]] == ["primary", "shadow"]
    assert row["shadow_cost_usd"] == pytest.approx(0.002) and row["cost_usd"] == pytest.approx(0.0001)
    assert row["verdicts"][-1]["gate"] == "shadow_agreement"


def test_shadow_spend_by_router_and_arm(store: TraceStore) -> None:
    def shadowed(router: str, usd: float, created: float, arm: str | None = None) -> Trace:
        t = trace(router, created=created, arm=arm, shadowed=True)
        t.calls.append(Call(model="large", role="shadow", cost_usd=usd))
        t.calls.append(Call(model="judge", role="shadow_judge", cost_usd=usd / 10))
        return t

    store.write([shadowed("gearshift/a", 0.01, 10.0), shadowed("gearshift/a", 0.02, 20.0),
                 shadowed("gearshift/ab", 0.04, 20.0, arm="gearshift/a"), shadowed("gearshift/a", 1.0, 5.0),
                 trace("gearshift/a", created=30.0)])
    spend = {(r, a): usd for r, a, usd in store.shadow_spend(since=10.0)}
    assert spend == {("gearshift/a", None): pytest.approx(0.033), ("gearshift/ab", "gearshift/a"): pytest.approx(0.044)}


def test_feedback(store: TraceStore) -> None:
    store.write_feedback("t1", 1.0, label="up", source="thumbs")
    time.sleep(0.01)
    middle = time.time()
    store.write_feedback("t2", 0.25, comment="meh")
    assert [(f["trace_id"], f["score"], f["label"]) for f in store.feedback()] == [("t1", 1.0, "up"), ("t2", 0.25, None)]
    assert [f["trace_id"] for f in store.feedback(since=middle)] == ["t2"]
    store.write_feedback("t1", 0.0, label="down", client="alice")  # a repeat replaces, and says who wrote it
    assert [(f["trace_id"], f["score"], f["client"]) for f in store.feedback()] == [("t2", 0.25, None), ("t1", 0.0, "alice")]


def test_trace_client_names_the_key_that_made_the_request(store: TraceStore) -> None:
    t = trace()
    t.client = "alice"
    store.write([t, trace()])
    assert store.trace_client(t.id) == (True, "alice")
    assert store.trace_client("nope") == (False, None)


def test_router_versions_number_per_router_and_promote_one(store: TraceStore) -> None:
    assert store.add_router_version("r", {"threshold": 0.4}, {"pairs": 10}, "alice") == 1
    assert store.add_router_version("r", {"threshold": 0.5}, {}, "bob") == 2
    assert store.add_router_version("q", {"threshold": 0.9}, {}, "bob") == 1
    assert store.active_version("r") is None
    store.promote("r", 1, "carol")
    store.promote("r", 2, "dave")
    versions = store.router_versions("r")
    assert [(v["version"], v["active"], v["promoted_by"]) for v in versions] == [(1, False, "carol"), (2, True, "dave")]
    assert versions[0]["settings"] == {"threshold": 0.4} and versions[0]["metrics"] == {"pairs": 10}
    assert store.active_version("r")["settings"] == {"threshold": 0.5}  # type: ignore[index]
    assert len(store.router_versions()) == 3
    with pytest.raises(KeyError, match="no version 7"):
        store.promote("r", 7, "eve")
    assert store.active_version("r")["version"] == 2  # type: ignore[index]  # the failed promotion changed nothing


def _at_once(store_config: StoreConfig, work: Callable[[TraceStore], None]) -> tuple[list[TraceStore], list[BaseException]]:
    """Run `work` at once in two threads, each on its own connection (two store objects), as two gateway
    replicas, two workers' writers, or a replica and the CLI have; the stores (still open) and what was raised."""
    stores = [open_store(store_config), open_store(store_config)]
    errors: list[BaseException] = []

    def run(s: TraceStore) -> None:
        try:
            work(s)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stores, errors


def test_replicas_adding_versions_at_once_get_distinct_numbers(store_config: StoreConfig) -> None:
    got: list[int] = []

    def add(s: TraceStore) -> None:
        for _ in range(15):
            got.append(s.add_router_version("r", {"threshold": 0.5}, {}, "replica"))

    stores, errors = _at_once(store_config, add)
    assert not errors
    assert sorted(got) == list(range(1, 31))
    for s in stores:
        s.close()


def test_two_writers_on_one_store_write_every_trace_without_an_error(store_config: StoreConfig) -> None:
    # Two connections writing traces at once, as the writers of `serve --workers 2` do: a write reads the stored
    # rows of its batch (the rollups) before it writes, and SQLite refused such a read-then-write transaction
    # at once whenever the other writer had committed in between ("database is locked").
    def write(s: TraceStore) -> None:
        for _ in range(30):
            s.write([trace() for _ in range(20)])

    stores, errors = _at_once(store_config, write)
    try:
        assert not errors, errors[:1]
        assert stores[0].count() == 2 * 30 * 20
    finally:
        for s in stores:
            s.close()


# PostgreSQL only: passwords and lost connections.

def test_postgres_password_from_the_environment_never_shows(pg_url: str, postgres, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                            caplog: pytest.LogCaptureFixture) -> None:
    # Without the password the server refuses, and the error says so without a traceback's worth of detail.
    with pytest.raises(StoreError, match=r"cannot connect.*password"):
        open_store(StoreConfig(url=pg_url))
    # A wrong password in the URL itself is masked in the error.
    wrong = pg_url.replace("postgres@", "postgres:hunter2-secret@")
    with pytest.raises(StoreError) as e:
        open_store(wrong)
    assert "hunter2-secret" not in str(e.value) and "postgres:***@127.0.0.1" in str(e.value)
    # The right one from the environment works, and appears nowhere in the logs.
    s = open_store(StoreConfig(url=pg_url, password_env=PW_ENV))
    s.write([trace()])
    assert s.count() == 1
    s.close()
    assert postgres.password not in caplog.text


def test_postgres_store_reconnects_after_losing_its_connection(pg_url: str, postgres,  # type: ignore[no-untyped-def]
                                                                caplog: pytest.LogCaptureFixture) -> None:
    s = open_store(StoreConfig(url=pg_url, password_env=PW_ENV))
    writer = TraceWriter(s, flush_interval=0.05)
    writer.put(trace())
    deadline = time.monotonic() + 10
    while writer.written < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    # The server drops the store's connection (a restart, a failover, an idle timeout would).
    with postgres.admin() as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gearshift'")
    writer.put(trace())
    writer.close()
    assert writer.written == 2 and writer.failed == 0  # the writer's retry found a new connection
    assert "connection lost, reconnecting" in caplog.text
    assert s.count() == 2
    s.close()


def test_postgres_schema_is_created_once_by_replicas_starting_together(pg_url: str) -> None:
    cfg = StoreConfig(url=pg_url, password_env=PW_ENV)
    stores: list[TraceStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(open_store(cfg))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(stores) == 4
    stores[0].write([trace()])
    assert [s.count() for s in stores] == [1, 1, 1, 1]
    for s in stores:
        s.close()



def _wait(cond, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_store_outage_loses_no_traces(pg_url: str, postgres, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    s = open_store(StoreConfig(url=pg_url, password_env=PW_ENV))
    writer = TraceWriter(s, flush_interval=0.05, max_held=50)
    try:
        postgres.accept_connections(pg_url, False)  # the database goes away (a failover, a restart)
        for _ in range(40):
            writer.put(trace())
        _wait(lambda: "store not taking traces" in caplog.text)
        time.sleep(0.5)
        assert writer.written == 0 and writer.pending() == 40  # held, not lost
        for _ in range(20):
            writer.put(trace())  # past max_held: dropped and counted, never blocking the caller
        assert writer.dropped == 10 and writer.pending() == 50
        postgres.accept_connections(pg_url, True)
        _wait(lambda: writer.written == 50)
        assert writer.written == 50 and writer.failed == 0 and writer.pending() == 0
        assert "store reachable again" in caplog.text
    finally:
        postgres.accept_connections(pg_url, True)
        writer.close()
    assert s.count() == 50
    s.close()


def test_traces_held_at_shutdown_are_spilled_and_written_at_the_next_start(
        pg_url: str, postgres, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    spill = tmp_path / "spill"
    s = open_store(StoreConfig(url=pg_url, password_env=PW_ENV))
    sent = [trace() for _ in range(500)]
    sent[0].calls.append(Call(model="large", role="shadow", cost_usd=0.5, response="ref"))
    writer = TraceWriter(s, flush_interval=0.05, spill=spill)
    try:
        postgres.accept_connections(pg_url, False)  # the store is down when the stop comes
        for t in sent:
            writer.put(t)
        writer.close(timeout=0.5)
        assert writer.spilled == 500 and writer.failed == 0 and writer.written == 0
        assert "kept in" in caplog.text and len(list(tmp_path.glob("spill.*.jsonl"))) == 1
    finally:
        postgres.accept_connections(pg_url, True)
    s.close()
    s = open_store(StoreConfig(url=pg_url, password_env=PW_ENV))
    after = TraceWriter(s, flush_interval=0.05, spill=spill)  # the next start
    assert after.unspilled == 500
    _wait(lambda: after.written == 500 and not list(tmp_path.iterdir()))
    after.close()
    assert after.written == 500 and list(tmp_path.iterdir()) == []  # the spill file is gone once written
    rows = {r["id"]: r for r in s.traces()}
    assert set(rows) == {t.id for t in sent}
    assert rows[sent[0].id]["shadow_cost_usd"] == pytest.approx(0.5) and rows[sent[0].id]["calls"][1]["response"] == "ref"
    s.close()


def test_a_trace_the_store_refuses_is_dropped_alone(store: TraceStore, caplog: pytest.LogCaptureFixture) -> None:
    bad = trace()
    bad.metadata = {"tier": object()}  # type: ignore[dict-item]  # a row no store can take (not JSON)
    writer = TraceWriter(store, flush_interval=0.05)
    for t in [trace(), bad, trace()]:
        writer.put(t)
    _wait(lambda: writer.failed == 1)
    writer.put(trace())
    writer.close()
    assert writer.written == 3 and writer.failed == 1 and store.count() == 3
    assert f"trace {bad.id} refused by the store 3 times, dropped" in caplog.text


def test_postgres_keeps_text_with_nul_characters(pg_url: str) -> None:
    s = open_store(StoreConfig(url=pg_url, password_env=PW_ENV))
    t = trace()
    t.prompt, t.response = "before\x00after", "ok\x00"
    s.write([t])
    (row,) = list(s.traces())
    assert row["prompt"] == "before\ufffdafter" and row["response"] == "ok\ufffd"
    s.close()


def test_prune_deletes_old_traces_calls_and_feedback(store: TraceStore) -> None:
    now = time.time()
    old = [trace(created=now - 40 * 86400 + i) for i in range(7)]
    new = [trace(created=now - 86400)]
    store.write(old + new)
    store.write_feedback(old[0].id, 1.0)  # recent feedback on an old trace goes with the trace
    store.write_feedback(new[0].id, 0.5)
    assert store.prune(now - 30 * 86400, chunk=3) == 7  # in several chunks
    assert [r["id"] for r in store.traces()] == [new[0].id] and store.count() == 1
    assert list(store.traces())[0]["calls"]  # the kept trace keeps its calls
    assert [f["trace_id"] for f in store.feedback()] == [new[0].id]
    assert store.prune(now - 30 * 86400) == 0


def test_one_process_leads_a_duty_until_it_goes(store_config: StoreConfig) -> None:
    # Two store objects stand for two processes sharing the store (two connections, two lock files).
    first, second = open_store(store_config), open_store(store_config)
    assert first.leads("watch-alerts") and first.leads("watch-alerts")  # asked again: still the leader
    assert not second.leads("watch-alerts")
    assert second.leads("retention")  # each duty has its own leader
    first.close()  # the leader goes away; the server frees its lock when the old session has ended
    _wait(lambda: second.leads("watch-alerts"))
    assert second.leads("watch-alerts")
    second.close()


def test_postgres_leadership_goes_with_a_lost_connection(pg_url: str, postgres) -> None:  # type: ignore[no-untyped-def]
    cfg = StoreConfig(url=pg_url, password_env=PW_ENV)
    first, second = open_store(cfg), open_store(cfg)
    assert first.leads("recalibrate") and not second.leads("recalibrate")
    with postgres.admin() as admin:  # the leader's connection drops (its lock with it)
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gearshift'"
                      " AND pid <> ALL(SELECT pid FROM pg_stat_activity WHERE application_name = 'gearshift'"
                      " ORDER BY backend_start DESC LIMIT 1)")
    _wait(lambda: second.leads("recalibrate"))  # the terminated session ends, and its lock with it
    assert second.leads("recalibrate")
    # Its connection is gone: the ping's statement finds it so and runs again on a new one.
    assert first.ping() and not first.leads("recalibrate")  # reconnected, it finds the duty taken
    first.close()
    second.close()


def test_a_store_an_older_gearshift_created_gets_the_new_columns(store_config: StoreConfig) -> None:
    # The traces table as it was before A/B arms, shadow accounting and endpoints (four columns fewer).
    from gearshift.store.sql import SCHEMA

    old = SCHEMA.split(";")[0].format(real="DOUBLE PRECISION", serial_pk="")
    for added in (",\n    cache TEXT", ",\n    cache_saved_usd DOUBLE PRECISION NOT NULL DEFAULT 0", "    arm TEXT,\n", "    shadowed INTEGER NOT NULL DEFAULT 0,\n",
                  ",\n    shadow_cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0", ",\n    endpoint TEXT NOT NULL DEFAULT 'chat'"):
        old = old.replace(added, "")
    assert "arm" not in old and "shadow" not in old and "endpoint" not in old and "cache" not in old
    if store_config.url.startswith("sqlite"):
        import sqlite3

        raw = sqlite3.connect(store_config.url.removeprefix("sqlite:///"), isolation_level=None)
    else:
        import psycopg

        raw = psycopg.connect(store_config.url, password=store_config.password(), autocommit=True)
    raw.execute(old)
    raw.execute("INSERT INTO traces (id, created, router, requested_model, status, streamed, cost_usd, latency_ms)"
                " VALUES ('old-1', 1.0, 'r', 'r', 200, 0, 0.5, 10.0)")
    raw.close()
    store = open_store(store_config)
    (row,) = list(store.traces())
    assert row["id"] == "old-1" and row["arm"] is None and row["shadowed"] is False and row["shadow_cost_usd"] == 0
    assert row["endpoint"] == "chat"  # every trace before endpoints came by chat completions
    store.write([trace(arm="b", shadowed=True, endpoint="messages")])
    assert store.count() == 2 and [r["arm"] for r in store.traces()] == [None, "b"]
    assert [r["endpoint"] for r in store.traces()] == ["chat", "messages"]
    assert [(r["cache"], r["cache_saved_usd"]) for r in store.traces()] == [(None, 0), (None, 0)]
    assert store.watch_episodes() == [] and store.open_episode({"watch": "w", "metric": "m", "started": 1.0})
    store.close()


def test_traces_keep_what_the_response_cache_did(store: TraceStore) -> None:
    hit, plain = trace(cache="hit", cache_saved_usd=0.25, created=1.0), trace(created=2.0)
    hit.calls = []
    store.write([hit, plain])
    assert [(r["cache"], r["cache_saved_usd"], r["cost_usd"]) for r in store.traces()] == [
        ("hit", 0.25, 0), (None, 0, pytest.approx(0.0001))]


def test_the_shared_response_cache_expires_and_keeps_a_router_to_its_cap(store: TraceStore) -> None:
    store.cache_put("k1", "r", "one", now=100.0, expires=110.0, max_entries=2)
    assert store.cache_get("k1", now=109.0) == "one" and store.cache_get("k1", now=110.0) is None
    store.cache_put("k1", "r", "one again", now=101.0, expires=200.0, max_entries=2)  # written again: replaced
    store.cache_put("k2", "r", "two", now=102.0, expires=200.0, max_entries=2)
    store.cache_put("other", "s", "another router's", now=102.5, expires=200.0, max_entries=2)
    assert store.cache_get("k1", now=103.0) == "one again"
    store.cache_put("k3", "r", "three", now=103.0, expires=200.0, max_entries=2)  # past the cap: the oldest goes
    assert [store.cache_get(k, now=104.0) for k in ("k1", "k2", "k3", "other")] == [
        None, "two", "three", "another router's"]


def test_find_traces_filters_newest_first_and_aggregates_for_the_dashboard(store: TraceStore) -> None:
    a = trace(created=100.0, client="app")
    b = trace("gearshift/other", created=200.0, client="batch", status=502)
    b.final_model = None
    c = trace(created=300.0, client="app")
    c.calls.append(Call(model="large", role="escalation", cost_usd=0.002))
    c.final_model = "large"
    store.write([a, b, c])

    def ids(**kw: object) -> list[str]:
        return [r["id"] for r in store.find_traces(**kw)]  # type: ignore[arg-type]

    assert ids() == [c.id, b.id, a.id]
    assert ids(router="gearshift/auto") == [c.id, a.id] and ids(model="large") == [c.id]
    assert ids(client="batch") == [b.id] and ids(status="error") == [b.id] and ids(status="502") == [b.id]
    assert ids(status="ok") == [c.id, a.id] and ids(escalated=True) == [c.id] and ids(escalated=False) == [b.id, a.id]
    assert ids(since=150.0, until=300.0) == [b.id] and ids(limit=1) == [c.id] and ids(trace_id=a.id) == [a.id]
    assert [x["role"] for x in store.find_traces(trace_id=c.id)[0]["calls"]] == ["primary", "escalation"]
    assert store.decision_mix(0.0, 150.0) == [(0.0, "gearshift/auto", "small", 1), (150.0, "gearshift/other", None, 1),
                                              (300.0, "gearshift/auto", "large", 1)]
    assert store.decision_mix(250.0, 150.0) == [(300.0, "gearshift/auto", "large", 1)]
    spend = {row[0]: row[1:] for row in store.client_spend()}
    assert spend["app"][0] == 2 and spend["app"][1] == pytest.approx(0.0001 + 0.0021) and spend["app"][2] == 0
    assert spend["batch"][0] == 1 and spend["batch"][2] == 1
    assert [row[0] for row in store.client_spend(since=150.0)] == ["app", "batch"]


def test_alert_episodes_open_once_close_and_are_read_by_range(store: TraceStore) -> None:
    drift = {"watch": "watch-alerts:r", "router": "r", "metric": "escalation_rate", "rule": "abs change",
             "value": 0.6, "baseline": 0.2, "bound": 0.1, "message": "escalation_rate 0.6 vs 0.2",
             "started": 100.0, "raised_by": "a:1"}
    assert store.open_episode(drift)
    assert not store.open_episode({**drift, "started": 150.0, "raised_by": "b:2"})  # one open episode per metric
    assert store.open_episode({**drift, "watch": "watch-alerts:other", "started": 120.0})  # another watch's own
    assert store.close_episode("watch-alerts:r", "escalation_rate", 200.0, 0.25, "b:2")
    assert not store.close_episode("watch-alerts:r", "escalation_rate", 210.0, 0.2, "b:2")  # none open now
    assert store.open_episode({**drift, "started": 300.0})  # it drifts again: a new episode
    mine = store.watch_episodes(watch="watch-alerts:r")
    assert [(e["started"], e["ended"], e["raised_by"], e["cleared_by"]) for e in mine] == [
        (100.0, 200.0, "a:1", "b:2"), (300.0, None, "a:1", None)]
    assert mine[0]["end_value"] == 0.25 and mine[0]["value"] == 0.6 and mine[0]["message"] == drift["message"]
    assert [e["started"] for e in store.watch_episodes(since=250.0)] == [120.0, 300.0]  # open ones overlap any later range
    assert [e["started"] for e in store.watch_episodes(since=150.0, until=250.0)] == [100.0, 120.0]
    assert store.watch_episodes(since=201.0, until=299.0) == [store.watch_episodes(watch="watch-alerts:other")[0]]


def _varied_traces(start: float) -> list[Trace]:
    """Cascade traffic with every kind of fact: gated, escalated, served and exploration pairs (judged,
    and by agreement with resolved and unresolved disagreements), a pair without its reference, a 502,
    a rejected request, a cache hit and a streamed answer."""
    from tests.support.watch_helpers import STRONG, WEAK, batch, cascade_trace

    out = batch(12, escalated_share=0.25, agree_share=0.6)
    out += [cascade_trace(direct_strong=True, shadow=True), cascade_trace(status=502), cascade_trace(router="")]
    for resolved in (True, False):
        t = cascade_trace(shadow=False)
        t.verdicts[1]["method"] = "final_answer"  # scored by agreement: a disagreement, not a loss
        if resolved:
            t.verdicts += [{"gate": "shadow_resolution", "model": WEAK, "score": 1.0},
                           {"gate": "shadow_resolution", "model": STRONG, "score": 0.0}]
        out.append(t)
    unrecorded = cascade_trace(shadow=True)
    unrecorded.verdicts = [v for v in unrecorded.verdicts if v["gate"] != "shadow_reference"]
    hit = cascade_trace()
    hit.cache, hit.cache_saved_usd, hit.streamed = "hit", 0.003, True
    out += [unrecorded, hit]
    for i, t in enumerate(out):
        t.created = start + 100.0 * i
        t.calls[0].usage_estimated = i % 5 == 0
    return out


def _same_totals(a: object, b: object) -> None:
    from dataclasses import asdict

    da, db = asdict(a), asdict(b)  # type: ignore[call-overload]
    assert da.keys() == db.keys()
    for k, v in da.items():
        assert v == (pytest.approx(db[k]) if isinstance(v, float) else db[k]), k


def test_totals_summed_in_sql_are_the_totals_of_the_full_rows(store_config: StoreConfig) -> None:
    from gearshift.store.view import Totals

    store = open_store(store_config)
    traces = _varied_traces(1000.0)
    store.write(traces)
    rows = list(store.traces())
    for ref in ("strong", None):
        [(none, total)] = store.totals(0.0, None, ref)
        assert none is None and total.requests == len(traces)
        _same_totals(total, Totals.of(rows, ref))
    buckets = store.totals(1000.0, 3000.0, "strong", 500.0)
    assert [b for b, _ in buckets] == [0, 1, 2, 3]
    for b, part in buckets:
        _same_totals(part, Totals.of([r for r in rows if 1000.0 + 500 * b <= r["created"] < 1500.0 + 500 * b], "strong"))
    assert sorted(store.latencies(0.0)) == sorted(
        (v.gated, v.escalated, v.latency_ms) for v in map(TraceView.of, rows) if v.answered and (v.gated or v.escalated))
    by_call = {(c["model"], c["role"]): 0.0 for r in rows for c in r["calls"]}
    for r in rows:
        for c in r["calls"]:
            by_call[(c["model"], c["role"])] += c["cost_usd"]
    assert {(m, role): usd for m, role, _, usd in store.call_spend(0.0)} == pytest.approx(by_call)
    verdicts = {v.id: v.gate_verdict for v in map(TraceView.of, rows)}
    for verdict in ("pass", "fail", "none"):
        assert {r["id"] for r in store.find_traces(verdict=verdict)} == {i for i, v in verdicts.items() if v == verdict}
    # A trace written again (its shadow pair arrived) has its facts computed again.
    late = traces[-1]
    late.verdicts += [{"gate": "shadow_agreement", "model": late.final_model, "passed": False, "score": 0.0,
                       "method": "judge"}, {"gate": "shadow_reference", "model": "strong", "passed": True}]
    late.revision += 1
    store.write([late])
    rows = list(store.traces())
    _same_totals(store.totals(0.0, None, "strong")[0][1], Totals.of(rows, "strong"))
    # Rows an older gearshift wrote (no facts) are backfilled, by the same function, when the store opens.
    store._run("UPDATE traces SET facts = 0, answered = 0, gated = 0, escalated = 0, verdict = 'none', "  # type: ignore[attr-defined]
               "cf_input_tokens = 0, pair_n = 0, pair_passed = 0")
    store.close()
    store = open_store(store_config)
    _same_totals(store.totals(0.0, None, "strong")[0][1], Totals.of(rows, "strong"))
    store.close()


def test_hourly_rollups_kept_by_the_writer_give_the_totals_of_the_full_rows(store_config: StoreConfig) -> None:
    import numpy as np

    from gearshift.store.view import Totals
    from gearshift.trace import Call

    store = open_store(store_config)
    traces = _varied_traces(0.0)
    for i, t in enumerate(traces):
        t.created = 7200.25 + 1000.0 * i  # over several hours
    store.write(traces[:-3])
    store.write([*traces[-3:], traces[0], traces[0]])  # written again, and twice in one batch
    late = traces[4]  # its shadow pair arrives: written again with a shadow call and the pair's verdicts
    late.calls.append(Call(model="strong", role="shadow", input_tokens=9, output_tokens=9, cost_usd=0.02, latency_ms=5))
    late.verdicts += [{"gate": "shadow_agreement", "model": late.final_model, "passed": False, "score": 0.0,
                       "method": "judge"}, {"gate": "shadow_reference", "model": "strong", "passed": True}]
    late.revision += 1
    store.write([late])

    def same(since: float, until: float) -> None:
        rows = [r for r in store.traces() if since <= r["created"] < until]
        got = store.range_sums(since, until, "strong", 3600.0)
        exact = TraceStore.range_sums(store, since, until, "strong", 3600.0)  # from the facts alone
        total = Totals()
        for _, part in got.buckets:
            total.merge(part)
        _same_totals(total, Totals.of(rows, "strong"))
        assert [t for t, _ in got.buckets] == sorted({r["created"] // 3600 * 3600 for r in rows})
        assert {(m, r): (n, pytest.approx(usd)) for m, r, n, usd in got.calls} == {
            (m, r): (n, usd) for m, r, n, usd in exact.calls}
        for mine, theirs in ((got.tier1, exact.tier1), (got.escalated, exact.escalated)):
            assert len(mine) == len(theirs)
            for q in (50, 95):
                want = float(np.percentile(theirs, q)) if theirs else None
                assert mine.percentile(q) == (None if want is None else pytest.approx(want, rel=0.01))  # type: ignore[union-attr]

    end = traces[-1].created
    same(0.0, end + 7200.0)
    same(9000.0, end - 1500.0)  # starting and ending mid-hour
    # The A/B page's columns (read in SQL) are those of the full traces.
    from gearshift.store.base import ABRows

    def by_id(r: ABRows) -> dict[str, tuple[object, ...]]:
        return {i: (*row, r.verdicts.get(k)) for k, (i, *row) in enumerate(zip(
            r.id, r.router, r.arm, r.status, r.cost_usd, r.latency_ms, r.verdicts_n, r.verdicts_passed, strict=True))}

    assert by_id(store.ab_rows()) == by_id(ABRows.of(store.traces())) and store.ab_rows().verdicts
    # Retention: the rollups of deleted hours go; the hour cut in two is computed again from what is left.
    assert store.prune(12000.0) == 5
    same(0.0, end + 7200.0)
    assert store._run("SELECT MIN(hour) FROM rollup_totals").fetchone()[0] == 3  # type: ignore[attr-defined]
    # A store from before the rollups gets them when it opens.
    for table in ("rollup_totals", "rollup_calls", "rollup_latency"):
        store._run(f"DROP TABLE {table}")  # type: ignore[attr-defined]
    store.close()
    store = open_store(store_config)
    same(9000.0, end + 7200.0)
    store.close()
