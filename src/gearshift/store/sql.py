"""The SQL both stores share: the schema, and every read and write as one DB-API statement set.

SQLite and PostgreSQL differ here only in column types, placeholders and how a writer takes the
lock that numbers router versions; each store module supplies those and its connection.
"""

from __future__ import annotations

import gc
import json
import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from gearshift.jsonfast import loads
from gearshift.store import rollup, rows
from gearshift.store.base import ABRows, LimitKey, TraceStore
from gearshift.store.rows import (
    CALL_COLS,
    FACT_COLS,
    FEEDBACK_COLS,
    KEY_COLS,
    KEY_FIELDS,
    TRACE_COLS,
    VERSION_COLS,
)
from gearshift.store.view import SHADOW_GATE, PairEstimate, Totals, TraceView
from gearshift.trace import Trace

# Columns added after a table first shipped must be nullable or have a default: an existing database
# gets them by ALTER TABLE ... ADD COLUMN when a newer gearshift opens it.
SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    id TEXT PRIMARY KEY,
    created {real} NOT NULL,
    router TEXT NOT NULL,
    requested_model TEXT NOT NULL,
    reason TEXT,
    route TEXT,
    final_model TEXT,
    status INTEGER NOT NULL,
    streamed INTEGER NOT NULL,
    cost_usd {real} NOT NULL,
    latency_ms {real} NOT NULL,
    estimated_tokens INTEGER,
    score {real},
    client TEXT,
    metadata TEXT,
    verdicts TEXT,
    prompt TEXT,
    response TEXT,
    error TEXT,
    arm TEXT,
    shadowed INTEGER NOT NULL DEFAULT 0,
    shadow_cost_usd {real} NOT NULL DEFAULT 0,
    answer_call INTEGER,
    response_truncated INTEGER NOT NULL DEFAULT 0,
    endpoint TEXT NOT NULL DEFAULT 'chat',
    team TEXT,
    cache TEXT,
    cache_saved_usd {real} NOT NULL DEFAULT 0,
    answered INTEGER NOT NULL DEFAULT 0,
    gated INTEGER NOT NULL DEFAULT 0,
    escalated INTEGER NOT NULL DEFAULT 0,
    verdict TEXT NOT NULL DEFAULT 'none',
    verdicts_n INTEGER NOT NULL DEFAULT 0,
    verdicts_passed INTEGER NOT NULL DEFAULT 0,
    cf_input_tokens INTEGER NOT NULL DEFAULT 0,
    cf_output_tokens INTEGER NOT NULL DEFAULT 0,
    estimated_calls INTEGER NOT NULL DEFAULT 0,
    pair_reference TEXT,
    pair_n INTEGER NOT NULL DEFAULT 0,
    pair_passed INTEGER NOT NULL DEFAULT 0,
    pair_judged INTEGER NOT NULL DEFAULT 0,
    pair_disagreed INTEGER NOT NULL DEFAULT 0,
    pair_resolved INTEGER NOT NULL DEFAULT 0,
    pair_weak {real} NOT NULL DEFAULT 0,
    pair_ref_grade {real} NOT NULL DEFAULT 0,
    facts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS traces_created ON traces(created);
CREATE INDEX IF NOT EXISTS traces_verdict_created ON traces(verdict, created);
CREATE INDEX IF NOT EXISTS traces_without_facts ON traces(id) WHERE facts = 0;
CREATE INDEX IF NOT EXISTS traces_created_facts ON traces(created, router, endpoint, cache, status, answered, gated,
    escalated, final_model, streamed, cost_usd, shadow_cost_usd, estimated_calls, cf_input_tokens, cf_output_tokens,
    verdicts_n, verdicts_passed, cache_saved_usd, latency_ms, client, team);
CREATE INDEX IF NOT EXISTS traces_pairs ON traces(created) WHERE pair_n > 0;
CREATE INDEX IF NOT EXISTS traces_router_created ON traces(router, created);
CREATE INDEX IF NOT EXISTS traces_client_created ON traces(client, created);
CREATE INDEX IF NOT EXISTS traces_model_created ON traces(final_model, created);
CREATE TABLE IF NOT EXISTS feedback (
    id {serial_pk},
    trace_id TEXT NOT NULL,
    created {real} NOT NULL,
    score {real} NOT NULL,
    label TEXT,
    source TEXT,
    comment TEXT,
    client TEXT
);
CREATE INDEX IF NOT EXISTS feedback_trace ON feedback(trace_id);
CREATE TABLE IF NOT EXISTS router_versions (
    router TEXT NOT NULL,
    version INTEGER NOT NULL,
    created {real} NOT NULL,
    created_by TEXT NOT NULL,
    settings TEXT NOT NULL,
    metrics TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    promoted_by TEXT,
    promoted_at {real},
    PRIMARY KEY (router, version)
);
CREATE TABLE IF NOT EXISTS calls (
    trace_id TEXT NOT NULL REFERENCES traces(id),
    idx INTEGER NOT NULL,
    model TEXT NOT NULL,
    role TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    usage_estimated INTEGER NOT NULL,
    cost_usd {real} NOT NULL,
    latency_ms {real} NOT NULL,
    status INTEGER NOT NULL,
    error TEXT,
    attempt INTEGER NOT NULL,
    response TEXT,
    truncated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (trace_id, idx)
);
CREATE TABLE IF NOT EXISTS watch_state (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS watch_episodes (
    id {serial_pk},
    watch TEXT NOT NULL,
    router TEXT,
    metric TEXT NOT NULL,
    rule TEXT,
    value {real},
    baseline {real},
    bound {real},
    message TEXT,
    started {real} NOT NULL,
    raised_by TEXT,
    ended {real},
    end_value {real},
    cleared_by TEXT
);
CREATE INDEX IF NOT EXISTS watch_episodes_started ON watch_episodes(watch, started);
CREATE TABLE IF NOT EXISTS shadow_reservations (
    id {serial_pk},
    router TEXT NOT NULL,
    day TEXT NOT NULL,
    created {real} NOT NULL,
    usd {real} NOT NULL,
    settled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS shadow_reservations_day ON shadow_reservations(router, day);
CREATE TABLE IF NOT EXISTS response_cache (
    key TEXT PRIMARY KEY,
    router TEXT NOT NULL,
    created {real} NOT NULL,
    expires {real} NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS response_cache_router ON response_cache(router, created);
CREATE INDEX IF NOT EXISTS response_cache_expires ON response_cache(expires);
CREATE TABLE IF NOT EXISTS limit_usage (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    dim TEXT NOT NULL,
    period TEXT NOT NULL,
    used {real} NOT NULL,
    ends {real} NOT NULL,
    PRIMARY KEY (scope, name, dim, period)
);
CREATE TABLE IF NOT EXISTS keys (
    id {serial_pk},
    name TEXT NOT NULL,
    team TEXT,
    hash TEXT NOT NULL,
    prefix TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    routers TEXT,
    models TEXT,
    rpm INTEGER,
    tpm INTEGER,
    usd_day {real},
    usd_month {real},
    expires {real},
    created {real} NOT NULL,
    created_by TEXT,
    revoked_at {real},
    revoked_by TEXT,
    updated {real} NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS keys_name ON keys(name);
CREATE UNIQUE INDEX IF NOT EXISTS keys_hash ON keys(hash);
"""


# An alert episode's row (watch_episodes), as `TraceStore.watch_episodes` returns it.
EPISODE_COLS = ("watch", "router", "metric", "rule", "value", "baseline", "bound", "message", "started", "raised_by",
                "ended", "end_value", "cleared_by")

# Counters of a period over for this long are deleted (a late settlement may still add to one).
LIMIT_GRACE_SECONDS = 300.0


def schema(real: str, serial_pk: str) -> list[str]:
    """The schema's statements in one dialect's types."""
    text = (SCHEMA + ";" + rollup.SCHEMA).format(real=real, serial_pk=serial_pk)
    return [s.strip() for s in text.split(";") if s.strip()]


def columns(real: str, serial_pk: str) -> dict[str, list[tuple[str, str]]]:
    """Each table's (column, definition) pairs, from the schema in one dialect's types."""
    out: dict[str, list[tuple[str, str]]] = {}
    for statement in schema(real, serial_pk):
        head, _, body = statement.partition("(")
        if not head.startswith("CREATE TABLE"):
            continue
        table = head.split()[-1]
        defs = [line.strip().rstrip(",") for line in body.rsplit(")", 1)[0].splitlines()]
        out[table] = [(d.split()[0], d) for d in defs if d and not d.startswith("PRIMARY KEY")]
    return out


def _upsert(table: str, cols: Sequence[str], key: Sequence[str]) -> str:
    # ON CONFLICT ... DO UPDATE: the same statement in SQLite (3.24+) and PostgreSQL. A trace is
    # written again when its shadow pair arrives; the row is updated, never deleted and re-added.
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in key)
    return (f"INSERT INTO {table} ({','.join(cols)}) VALUES ({','.join('?' * len(cols))}) "
            f"ON CONFLICT ({','.join(key)}) DO UPDATE SET {updates}")


UPSERT_TRACE = _upsert("traces", TRACE_COLS + FACT_COLS, ("id",))
SET_FACTS = f"UPDATE traces SET {', '.join(f'{c} = ?' for c in FACT_COLS)} WHERE id = ?"

# Totals (view.Totals) summed in SQL from the fact columns as Totals.add counts a view: grouped by the
# few values that decide what a trace adds (routed, status, answered, gated, escalated, strong), so that
# each column is a plain SUM and the rest is done per group in Python. Every column these read is in
# the index traces_created_facts: a range is read from the index alone, never from the wide rows.
TOTALS_KEYS = ("router", "endpoint", "cache", "status", "answered", "gated", "escalated")
TOTALS_SUMS = ("COUNT(*)", "SUM(streamed)", "SUM(cost_usd)", "SUM(shadow_cost_usd)", "SUM(estimated_calls)",
               "SUM(cf_input_tokens)", "SUM(cf_output_tokens)", "SUM(verdicts_n)", "SUM(verdicts_passed)",
               "SUM(cache_saved_usd)", "MIN(created)", "MAX(created)")
# The served pairs' sums, from the few traces with pairs (a partial index): the reference (or, when the
# trace did not record one, the caller's) is not the final model (TraceView.served_pairs).
PAIR_SUMS = ("SUM(pair_n)", "SUM(pair_passed)", "SUM(pair_judged)", "SUM(pair_disagreed)", "SUM(pair_resolved)",
             "SUM(pair_weak)", "SUM(pair_ref_grade)")
SERVED = "answered = 1 AND router <> '' AND final_model <> COALESCE(NULLIF(pair_reference, ''), ?, '')"
UPSERT_CALL = _upsert("calls", CALL_COLS, ("trace_id", "idx"))

# The one read of a presented key: by its HMAC, through the unique index (never a scan of the keys).
KEY_BY_HASH = f"SELECT hash, {','.join(KEY_COLS)} FROM keys WHERE hash = ?"


def _merge_into(out: dict[Any, Totals], key: int | None, part: Totals) -> None:
    if key in out:
        out[key].merge(part)
    else:
        out[key] = part


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a read builds a range's rows: tens of thousands of tuples of plain
    values, which form no cycles, would otherwise set off several collections of the whole heap."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _where(since: float | None = None, until: float | None = None, router: str | None = None,
           model: str | None = None, status: str | None = None, client: str | None = None,
           escalated: bool | None = None, trace_id: str | None = None,
           team: str | None = None, verdict: str | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause (with its leading space, or empty) and arguments of trace filters (see find_traces)."""
    where: list[str] = []
    args: list[Any] = []
    for clause, value in (("router = ?", router), ("final_model = ?", model), ("client = ?", client),
                          ("team = ?", team), ("verdict = ?", verdict),
                          ("id = ?", trace_id), ("created >= ?", since), ("created < ?", until)):
        if value is not None:
            where.append(clause)
            args.append(value)
    if status == "ok":
        where.append("status = 200")
    elif status == "error":
        where.append("status <> 200")
    elif status is not None:
        where.append("status = ?")
        args.append(int(status))
    if escalated is not None:
        # What TraceView.escalated means, as an index lookup on calls' primary key.
        where.append(("" if escalated else "NOT ") + "EXISTS (SELECT 1 FROM calls c WHERE c.trace_id = traces.id "
                     "AND c.role = 'escalation')")
    return (" WHERE " + " AND ".join(where) if where else ""), args


class SQLStore(TraceStore):
    """A trace store over one DB-API connection, guarded by a lock: the writer thread and readers
    may share a store object. Subclasses set `_db` and the dialect hooks."""

    placeholder = "?"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_transaction = False  # a statement that fails inside one is not retried alone
        self._db: Any = None

    # Dialect hooks.
    def _connection(self) -> Any:
        """The open connection (a store that can reconnect does it here)."""
        return self._db

    def _begin_write(self, table: str) -> None:
        """Start a transaction that holds the lock numbering rows of `table` until it ends."""
        raise NotImplementedError

    def _column_names(self, table: str) -> set[str]:
        """The columns a table has now."""
        raise NotImplementedError

    def _create_schema(self, real: str, serial_pk: str) -> None:
        """Create what is missing: tables, columns a newer gearshift added to older tables, indexes
        (last: an index may be on an added column)."""
        statements = schema(real, serial_pk)
        fresh = not self._column_names("rollup_totals")  # this open adds the rollups: build them from the traces
        for statement in statements:
            if statement.startswith("CREATE TABLE"):
                self._run(statement)
        for table, cols in columns(real, serial_pk).items():
            have = self._column_names(table)
            for name, definition in cols:
                if name not in have:
                    self._run(f"ALTER TABLE {table} ADD COLUMN {definition}")
        for statement in statements:
            if not statement.startswith("CREATE TABLE"):
                self._run(statement)
        self._backfill_facts(roll=not fresh)
        if fresh:
            self._rebuild_rollups()

    def _backfill_facts(self, chunk: int = 2000, roll: bool = True) -> None:
        """Compute the fact columns of rows written before them (by an older gearshift), through the same
        function the writer uses (rows.facts); found by a partial index, so a store without any is free.
        An older writer did not add them to the rollups either: with `roll`, they are added now."""
        while True:
            ids = [r[0] for r in self._run("SELECT id FROM traces WHERE facts = 0 LIMIT ?", (chunk,)).fetchall()]
            if not ids:
                return
            marks = ",".join("?" * len(ids))
            found = self._read_with_calls(f"SELECT {','.join(TRACE_COLS)} FROM traces WHERE id IN ({marks})", ids)
            self._connection().cursor().executemany(
                self._sql(SET_FACTS), [(*rows.facts(TraceView.of(t)), t["id"]) for t in found])
            if roll:
                delta = rollup.Delta()
                self._stored_delta(delta, ids, 1)
                self._apply(delta)

    def _stored_delta(self, delta: rollup.Delta, ids: Sequence[str], sign: int) -> bool:
        """Add to `delta` what the stored rows of these ids add to the rollups (times `sign`); whether any is stored."""
        any_found = False
        for lo in range(0, len(ids), 500):
            part = ids[lo:lo + 500]
            marks = ",".join("?" * len(part))
            # Rows without facts (an older replica's, during an upgrade) were never added: nothing to take back.
            found = self._run(f"SELECT {','.join(rollup.COLS)} FROM traces WHERE id IN ({marks}) AND facts <> 0",
                              part).fetchall()
            if not found:
                continue
            any_found = True
            marks = ",".join("?" * len(found))
            calls = self._run(f"SELECT trace_id, model, role, cost_usd FROM calls WHERE trace_id IN ({marks})",
                              [f[0] for f in found]).fetchall()
            delta.add(found, calls, sign)
        return any_found

    def _apply(self, delta: rollup.Delta, hours: Iterable[int] = ()) -> None:
        """Add a delta to the rollups; then drop the emptied rows of `hours` (a trace taken back)."""
        cur = self._connection().cursor()
        for sql, values in delta.statements():
            cur.executemany(self._sql(sql), self._clean(values))
        for hour in set(hours):
            for table in rollup.TABLES:
                self._run(f"DELETE FROM {table} WHERE hour = ? AND n = 0", (hour,))

    def _rebuild_rollups(self, since_hour: int | None = None, until_hour: int | None = None) -> None:
        """Compute the rollups of these hours (default: all) again from the traces' facts, a day at a time
        (the caller holds the write transaction)."""
        (lo,), (hi,) = (self._run(f"SELECT {f}(created) FROM traces").fetchone() for f in ("MIN", "MAX"))  # 2 probes
        for table in rollup.TABLES:
            self._run(f"DELETE FROM {table} WHERE hour >= ? AND hour < ?",
                      (-1 if since_hour is None else since_hour, 2**62 if until_hour is None else until_hour))
        if lo is None:
            return
        start = float(lo) if since_hour is None else max(float(lo), since_hour * rollup.HOUR)
        end = float(hi) + 1 if until_hour is None else min(float(hi) + 1, until_hour * rollup.HOUR)
        day = 24 * rollup.HOUR
        t = start
        while t < end:
            stop = min(end, (t // day + 1) * day)
            delta = rollup.Delta()
            # Rows without facts yet (an older replica's) are added when a store opens and backfills them.
            found = self._run(f"SELECT {','.join(rollup.COLS)} FROM traces WHERE created >= ? AND created < ? "
                              "AND facts <> 0", (t, stop)).fetchall()
            calls = self._run("SELECT c.trace_id, c.model, c.role, c.cost_usd FROM traces CROSS JOIN calls c "
                              "WHERE traces.created >= ? AND traces.created < ? AND traces.facts <> 0 "
                              "AND c.trace_id = traces.id", (t, stop)).fetchall()
            delta.add(found, calls)
            self._apply(delta)
            t = stop

    def _clean(self, values: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Rows as this database can take them (default: as they are)."""
        return values

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _run(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._connection().execute(self._sql(sql), tuple(args))

    @contextmanager
    def _transaction(self, lock_table: str | None = None) -> Iterator[None]:
        if lock_table is None:
            self._run("BEGIN")
        else:
            self._begin_write(lock_table)
        self._in_transaction = True
        try:
            yield
            self._run("COMMIT")
        except BaseException:
            # On a lost connection the rollback fails too: the first error is the one to report.
            with suppress(Exception):
                self._run("ROLLBACK")
            raise
        finally:
            self._in_transaction = False

    def write(self, traces: Sequence[Trace]) -> None:
        if not traces:
            return
        if len({t.id for t in traces}) < len(traces):
            traces = list({t.id: t for t in traces}.values())  # the last write of a trace is the one stored
        trows, crows = rows.encode(traces)
        delta = rollup.of_encoded(trows, crows)  # the facts encode computed, summed per hour
        trows, crows = self._clean(trows), self._clean(crows)
        # The write lock from the start: the lookup below reads before the batch writes, and a read transaction
        # that another connection wrote past cannot become a write one (SQLite fails it at once, whatever its busy
        # timeout: the gateway's own writes, or another worker's writer, set the writer into an outage).
        with self._lock, self._transaction(lock_table="traces"):
            # A trace written again (its shadow pair arrived) takes back what its stored row added. Every id is
            # looked up, not only revised traces: a batch sent again after a commit it could not confirm would
            # otherwise be counted twice.
            again = self._stored_delta(delta, [r[0] for r in trows], -1)
            cur = self._connection().cursor()
            cur.executemany(self._sql(UPSERT_TRACE), trows)
            if crows:
                cur.executemany(self._sql(UPSERT_CALL), crows)
            self._apply(delta, {k[0] for k in delta.totals} if again else ())

    def traces(self, since: float | None = None, router: str | None = None,
               limit: int | None = None, client: str | None = None,
               team: str | None = None) -> Iterator[dict[str, Any]]:
        where, args = _where(since=since, router=router, client=client, team=team)
        sql = f"SELECT {','.join(TRACE_COLS)} FROM traces{where} ORDER BY created, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        yield from self._with_calls(sql, args)

    def _with_calls(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        """The trace rows a query selects (TRACE_COLS), each with its calls."""
        with self._lock:
            return self._read_with_calls(sql, args)

    def _read_with_calls(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        # _with_calls, for a caller that holds the lock.
        found = self._run(sql, args).fetchall()
        calls: dict[str, list[dict[str, Any]]] = {}
        ids = [r[0] for r in found]
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            q = (f"SELECT {','.join(CALL_COLS)} FROM calls WHERE trace_id IN ({','.join('?' * len(part))}) "
                 "ORDER BY trace_id, idx")
            for c in self._run(q, part).fetchall():
                trace_id, call = rows.decode_call(c)
                calls.setdefault(trace_id, []).append(call)
        return [rows.decode_trace(r, calls.get(r[0], [])) for r in found]

    def find_traces(self, since: float | None = None, until: float | None = None, router: str | None = None,
                    model: str | None = None, status: str | None = None, client: str | None = None,
                    escalated: bool | None = None, trace_id: str | None = None,
                    limit: int = 100, verdict: str | None = None) -> list[dict[str, Any]]:
        where, args = _where(since, until, router, model, status, client, escalated, trace_id, verdict=verdict)
        return self._with_calls(f"SELECT {','.join(TRACE_COLS)} FROM traces{where} "
                                f"ORDER BY created DESC, id DESC LIMIT {int(limit)}", args)

    def totals(self, since: float, until: float | None = None, reference: str | None = None,
               bucket_seconds: float | None = None) -> list[tuple[int | None, Totals]]:
        bucket = "CAST(FLOOR((created - ?) / ?) AS INTEGER)" if bucket_seconds else "NULL"
        bargs: list[Any] = [since, bucket_seconds] if bucket_seconds else []
        where, wargs = _where(since=since, until=until)
        keys = ", ".join(TOTALS_KEYS)
        with self._lock:
            found = self._run(f"SELECT {bucket} AS b, {keys}, CASE WHEN final_model = ? THEN 1 ELSE 0 END AS strong, "
                              f"{', '.join(TOTALS_SUMS)} FROM traces{where} GROUP BY b, {keys}, strong",
                              [*bargs, reference, *wargs]).fetchall()
            pairs = self._pairs(bucket, bargs, where, wargs, reference)
        out: dict[int | None, Totals] = {}
        for b, *group, strong, n, streamed, cost, shadow, estimated, cf_in, cf_out, verdicts, passed, saved, start, \
                end in found:
            part = rollup.part_of(group, (n, streamed, cost, shadow, estimated, cf_in, cf_out, verdicts, passed, saved),
                                  strong)
            part.start, part.end = float(start), float(end)
            _merge_into(out, None if b is None else int(b), part)
        for b, pair in pairs:
            out[b].served += pair
        return sorted(out.items(), key=lambda kv: -1 if kv[0] is None else kv[0])

    def _pairs(self, bucket: str, bargs: Sequence[Any], where: str, wargs: Sequence[Any],
               reference: str | None) -> list[tuple[int | None, PairEstimate]]:
        # The served pairs' sums per bucket, from the few traces with pairs (the caller holds the lock).
        found = self._run(f"SELECT {bucket} AS b, {', '.join(PAIR_SUMS)} FROM traces{where} AND pair_n > 0 "
                          f"AND {SERVED} GROUP BY b", [*bargs, *wargs, reference]).fetchall()
        return [(None if b is None else int(b), PairEstimate(int(n), int(agreed), int(judged), int(disagreed),
                                                             int(resolved), float(weak), float(ref)))
                for b, n, agreed, judged, disagreed, resolved, weak, ref in found]

    def range_sums(self, since: float, until: float, reference: str | None,
                   bucket_seconds: float) -> rollup.RangeSums:
        # Whole hours from the rollups, the partial hours at the edges from the traces' facts (the covering
        # index): chart buckets of whole hours, the first starting at the hour that holds `since`.
        h0, h1 = math.ceil(since / rollup.HOUR), math.floor(until / rollup.HOUR)
        if h0 >= h1 or bucket_seconds % rollup.HOUR:
            return super().range_sums(since, until, reference, bucket_seconds)
        per, anchor = int(bucket_seconds // rollup.HOUR), math.floor(since / rollup.HOUR)
        between = ("hour >= ? AND hour < ?", (h0, h1))
        with self._lock:
            found = self._run(f"SELECT (hour - ?) / ? AS b, {', '.join(rollup.GROUP)}, "
                              f"{', '.join(f'SUM({c})' for c in rollup.SUMS)} FROM rollup_totals WHERE {between[0]} "
                              f"GROUP BY b, {', '.join(rollup.GROUP)}", (anchor, per, *between[1])).fetchall()
            calls = self._run(f"SELECT model, role, SUM(n), SUM(cost_usd) FROM rollup_calls WHERE {between[0]} "
                              "GROUP BY model, role", between[1]).fetchall()
            latency = self._run(f"SELECT escalated, bucket, SUM(n) FROM rollup_latency WHERE {between[0]} "
                                "GROUP BY escalated, bucket", between[1]).fetchall()
            out: dict[int, Totals] = {}
            width = len(rollup.GROUP)
            for b, *rest in found:
                group, sums = rest[:width], rest[width:]
                if sums[0]:
                    _merge_into(out, int(b), rollup.rolled_part(group, sums, reference))
            for b in out:  # each bucket's first and last trace: an index probe each (MIN and MAX apart)
                span = (max(h0, anchor + b * per) * rollup.HOUR, min(h1, anchor + (b + 1) * per) * rollup.HOUR)
                (out[b].start,), (out[b].end,) = (self._run(f"SELECT {f}(created) FROM traces WHERE created >= ? "
                                                            "AND created < ?", span).fetchone() for f in ("MIN", "MAX"))
        hist = {0: rollup.Histogram(), 1: rollup.Histogram()}
        for escalated, b, n in latency:
            hist[int(escalated)].add(int(b), int(n))
        spend = {(m, r): (int(n), float(usd)) for m, r, n, usd in calls}
        edges: tuple[tuple[float, float, int], ...] = ((since, h0 * rollup.HOUR, 0),
                                                        (h1 * rollup.HOUR, until, (h1 - anchor) // per))
        for lo, hi, edge in edges:
            for _, part in self.totals(lo, hi, reference):
                _merge_into(out, edge, part)
            for _gated, escalated, ms in self.latencies(lo, hi):
                hist[int(escalated)].add(rollup.bucket(ms))
            for m, r, n, usd in self.call_spend(lo, hi):
                have = spend.get((m, r), (0, 0.0))
                spend[(m, r)] = (have[0] + n, have[1] + usd)
        buckets = [(float((anchor + b * per) * rollup.HOUR), out[b]) for b in sorted(out)]
        return rollup.RangeSums(buckets, hist[0], hist[1], [(m, r, n, usd) for (m, r), (n, usd) in spend.items() if n])

    def latencies(self, since: float, until: float | None = None) -> list[tuple[bool, bool, float]]:
        where, args = _where(since=since, until=until)
        with self._lock:
            found = self._run(f"SELECT gated, escalated, latency_ms FROM traces{where} AND answered = 1 "
                              "AND (gated = 1 OR escalated = 1)", args).fetchall()
        return [(bool(g), bool(e), float(ms)) for g, e, ms in found]

    def call_spend(self, since: float, until: float | None = None) -> list[tuple[str, str, int, float]]:
        where, args = _where(since=since, until=until)
        with self._lock:
            # CROSS JOIN: SQLite then reads the range of traces first, and each one's calls by their key.
            found = self._run("SELECT c.model, c.role, COUNT(*), SUM(c.cost_usd) FROM traces CROSS JOIN calls c"
                              f"{where.replace('created', 'traces.created')} AND c.trace_id = traces.id "
                              "GROUP BY c.model, c.role", args).fetchall()
        return [(m, r, int(n), float(usd)) for m, r, n, usd in found]

    def ab_rows(self, since: float | None = None, router: str | None = None) -> ABRows:
        where, args = _where(since=since, router=router)
        with _collector_paused():
            with self._lock:
                # The verdicts' JSON only where a shadow agreement is in it (a few traces): the gates' counts are facts.
                found = self._run("SELECT id, router, arm, status, cost_usd, latency_ms, verdicts_n, verdicts_passed, "
                                  f"CASE WHEN verdicts LIKE ? THEN verdicts END FROM traces{where}",
                                  [f"%{SHADOW_GATE}%", *args]).fetchall()
            if not found:
                return ABRows([], [], [], [], [], [], [], [], {})
            ids, routers, arms, status, cost, latency, gates, passed, verdicts = zip(*found, strict=True)
            return ABRows(ids, routers, arms, status, cost, latency, gates, passed,
                          {i: loads(v) for i, v in enumerate(verdicts) if v})

    def decision_mix(self, since: float, bucket_seconds: float) -> list[tuple[float, str, str | None, int]]:
        with self._lock:
            found = self._run("SELECT CAST(FLOOR(created / ?) AS INTEGER) AS b, router, final_model, COUNT(*) "
                              "FROM traces WHERE created >= ? GROUP BY b, router, final_model ORDER BY b",
                              (bucket_seconds, since)).fetchall()
        return [(float(b) * bucket_seconds, r, m, int(n)) for b, r, m, n in found]

    def client_spend(self, since: float | None = None, by: str = "client") -> list[tuple[str | None, int, float, int]]:
        column = {"client": "client", "team": "team"}[by]  # a column name, never the caller's text
        where, args = ("WHERE created >= ? ", (since,)) if since is not None else ("", ())
        with self._lock:
            # Grouped by an expression, not the column: SQLite would otherwise walk all of traces(client, created)
            # for its order, where the range of the covering traces_created_facts is all it needs.
            found = self._run(f"SELECT CASE WHEN {column} IS NULL THEN NULL ELSE {column} END, COUNT(*), "
                              "COALESCE(SUM(cost_usd), 0), SUM(CASE WHEN status = 200 THEN 0 ELSE 1 END) FROM traces "
                              f"{where}GROUP BY 1 ORDER BY 3 DESC", args).fetchall()
        return [(c, int(n), float(usd), int(err)) for c, n, usd, err in found]

    def shadow_spend(self, since: float) -> list[tuple[str, str | None, float]]:
        with self._lock:
            found = self._run("SELECT router, arm, SUM(shadow_cost_usd) FROM traces WHERE created >= ? AND shadowed = 1 "
                              "GROUP BY router, arm", (since,)).fetchall()
        return [(r, a, float(usd)) for r, a, usd in found]

    def write_feedback(self, trace_id: str, score: float, label: str | None = None, source: str | None = None,
                       comment: str | None = None, client: str | None = None) -> None:
        with self._lock, self._transaction():
            self._run("DELETE FROM feedback WHERE trace_id = ?", (trace_id,))
            self._run("INSERT INTO feedback (trace_id, created, score, label, source, comment, client) "
                      "VALUES (?,?,?,?,?,?,?)", (trace_id, time.time(), score, label, source, comment, client))

    def feedback(self, since: float | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {','.join(FEEDBACK_COLS)} FROM feedback" + (" WHERE created >= ?" if since is not None else "")
        with self._lock:
            found = self._run(sql + " ORDER BY id", () if since is None else (since,)).fetchall()
        return [dict(zip(FEEDBACK_COLS, r, strict=True)) for r in found]

    def add_router_version(self, router: str, settings: dict[str, Any], metrics: dict[str, Any],
                           created_by: str) -> int:
        # Several processes (gateway replicas, the CLI) may add versions at once: the write lock
        # makes "last number + 1" unique.
        with self._lock, self._transaction(lock_table="router_versions"):
            (last,) = self._run("SELECT COALESCE(MAX(version), 0) FROM router_versions WHERE router = ?",
                                (router,)).fetchone()
            version = int(last) + 1
            self._run("INSERT INTO router_versions (router, version, created, created_by, settings, metrics)"
                      " VALUES (?,?,?,?,?,?)",
                      (router, version, time.time(), created_by, json.dumps(settings), json.dumps(metrics)))
        return version

    def router_versions(self, router: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {','.join(VERSION_COLS)} FROM router_versions" + (" WHERE router = ?" if router else "")
        with self._lock:
            found = self._run(sql + " ORDER BY router, version", (router,) if router else ()).fetchall()
        return [rows.decode_version(r) for r in found]

    def promote(self, router: str, version: int, by: str) -> None:
        with self._lock, self._transaction(lock_table="router_versions"):
            found = self._run("SELECT 1 FROM router_versions WHERE router = ? AND version = ?",
                              (router, version)).fetchone()
            if not found:
                raise KeyError(f"router {router!r} has no version {version}")
            self._run("UPDATE router_versions SET active = 0 WHERE router = ?", (router,))
            self._run("UPDATE router_versions SET active = 1, promoted_by = ?, promoted_at = ? "
                      "WHERE router = ? AND version = ?", (by, time.time(), router, version))

    def watch_state(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._run("SELECT state FROM watch_state WHERE name = ?", (name,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def save_watch_state(self, name: str, state: dict[str, Any]) -> None:
        with self._lock, self._transaction():
            self._run("INSERT INTO watch_state (name, state, updated) VALUES (?,?,?) ON CONFLICT (name) "
                      "DO UPDATE SET state = excluded.state, updated = excluded.updated",
                      (name, json.dumps(state), time.time()))

    def open_episode(self, episode: Mapping[str, Any]) -> bool:
        # The write lock makes "none open, so add one" one step: a duty holder that took over from one
        # that died between writing the episode and its state adds no second episode of the same alert.
        with self._lock, self._transaction(lock_table="watch_episodes"):
            if self._run("SELECT 1 FROM watch_episodes WHERE watch = ? AND metric = ? AND ended IS NULL",
                         (episode["watch"], episode["metric"])).fetchone() is not None:
                return False
            cols = [c for c in EPISODE_COLS if c in episode]
            self._run(f"INSERT INTO watch_episodes ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                      tuple(episode[c] for c in cols))
        return True

    def close_episode(self, watch: str, metric: str, ended: float, end_value: float | None, by: str) -> bool:
        with self._lock, self._transaction():
            cur = self._run("UPDATE watch_episodes SET ended = ?, end_value = ?, cleared_by = ? "
                            "WHERE watch = ? AND metric = ? AND ended IS NULL", (ended, end_value, by, watch, metric))
            return bool(cur.rowcount)

    def watch_episodes(self, since: float | None = None, until: float | None = None,
                       watch: str | None = None) -> list[dict[str, Any]]:
        where, args = ["1 = 1"], []
        for clause, value in (("watch = ?", watch), ("started < ?", until), ("(ended IS NULL OR ended >= ?)", since)):
            if value is not None:
                where.append(clause)
                args.append(value)
        with self._lock:
            found = self._run(f"SELECT {','.join(EPISODE_COLS)} FROM watch_episodes WHERE {' AND '.join(where)} "
                              "ORDER BY started, id", args).fetchall()
        return [dict(zip(EPISODE_COLS, r, strict=True)) for r in found]

    def reserve_shadow(self, router: str, day: str, usd: float, budget: float) -> int | None:
        # The write lock makes the check and the insert one step across every process sharing the store.
        with self._lock, self._transaction(lock_table="shadow_reservations"):
            (spent,) = self._run("SELECT COALESCE(SUM(usd), 0) FROM shadow_reservations WHERE router = ? AND day = ?",
                                 (router, day)).fetchone()
            if float(spent) >= budget:
                return None
            cur = self._run("INSERT INTO shadow_reservations (router, day, created, usd) VALUES (?,?,?,?) "
                            "RETURNING id", (router, day, time.time(), usd))
            return int(cur.fetchone()[0])

    def settle_shadow(self, reservation: int, usd: float) -> None:
        with self._lock, self._transaction():
            self._run("UPDATE shadow_reservations SET usd = ?, settled = 1 WHERE id = ?", (usd, reservation))

    def shadow_reserved(self, router: str, day: str) -> float:
        with self._lock:
            (spent,) = self._run("SELECT COALESCE(SUM(usd), 0) FROM shadow_reservations WHERE router = ? AND day = ?",
                                 (router, day)).fetchone()
        return float(spent)

    def add_limit_usage(self, deltas: Mapping[LimitKey, tuple[float, float]], read: Iterable[LimitKey],
                        now: float) -> dict[LimitKey, float]:
        # One write transaction: every process's additions are summed by the database, never overwritten.
        keys = list(dict.fromkeys([*deltas, *read]))
        with self._lock, self._transaction(lock_table="limit_usage"):
            for (scope, name, dim, period), (delta, ends) in deltas.items():
                self._run("INSERT INTO limit_usage (scope, name, dim, period, used, ends) VALUES (?,?,?,?,?,?) "
                          "ON CONFLICT (scope, name, dim, period) DO UPDATE SET used = limit_usage.used + "
                          "excluded.used", (scope, name, dim, period, delta, ends))
            self._run("DELETE FROM limit_usage WHERE ends < ?", (now - LIMIT_GRACE_SECONDS,))
            totals = {}
            for key in keys:
                row = self._run("SELECT used FROM limit_usage WHERE scope = ? AND name = ? AND dim = ? AND period = ?",
                                key).fetchone()
                totals[key] = float(row[0]) if row else 0.0
        return totals

    def add_key(self, record: dict[str, Any], key_hash: str) -> None:
        fields = rows.encode_key_fields(record)
        cols = [c for c in KEY_COLS if c in fields]
        with self._lock, self._transaction(lock_table="keys"):
            if self._run("SELECT 1 FROM keys WHERE name = ?", (record["name"],)).fetchone() is not None:
                raise KeyError(f"a key named {record['name']!r} exists")
            self._run(f"INSERT INTO keys (hash, {','.join(cols)}) VALUES (?, {','.join('?' * len(cols))})",
                      (key_hash, *(fields[c] for c in cols)))

    def key_by_hash(self, key_hash: str) -> tuple[str, dict[str, Any]] | None:
        with self._lock:
            row = self._run(KEY_BY_HASH, (key_hash,)).fetchone()
        return None if row is None else (row[0], rows.decode_key(row[1:]))

    def key(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._run(f"SELECT {','.join(KEY_COLS)} FROM keys WHERE name = ?", (name,)).fetchone()
        return None if row is None else rows.decode_key(row)

    def stored_keys(self) -> list[dict[str, Any]]:
        with self._lock:
            found = self._run(f"SELECT {','.join(KEY_COLS)} FROM keys ORDER BY name").fetchall()
        return [rows.decode_key(r) for r in found]

    def update_key(self, name: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        unknown = set(fields) - set(KEY_FIELDS)
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        values = rows.encode_key_fields(fields)
        sets = ", ".join([f"{c} = ?" for c in values] + ["updated = ?"])
        with self._lock, self._transaction():
            self._run(f"UPDATE keys SET {sets} WHERE name = ?", (*values.values(), time.time(), name))
        return self.key(name)

    def revoke_key(self, name: str, by: str) -> dict[str, Any] | None:
        now = time.time()
        with self._lock, self._transaction():
            # A key revoked once stays revoked by whoever did it first.
            self._run("UPDATE keys SET revoked_at = ?, revoked_by = ?, updated = ? WHERE name = ? AND revoked_at IS NULL",
                      (now, by, now, name))
        return self.key(name)

    def prune(self, before: float, chunk: int = 5000) -> int:
        # In chunks, each its own transaction: the trace writer gets the store between them.
        total = 0
        while True:
            with self._lock, self._transaction():
                ids = [r[0] for r in self._run("SELECT id FROM traces WHERE created < ? LIMIT ?",
                                               (before, chunk)).fetchall()]
                if ids:
                    marks = ",".join("?" * len(ids))
                    self._run(f"DELETE FROM calls WHERE trace_id IN ({marks})", ids)
                    self._run(f"DELETE FROM feedback WHERE trace_id IN ({marks})", ids)
                    self._run(f"DELETE FROM traces WHERE id IN ({marks})", ids)
            total += len(ids)
            if len(ids) < chunk:
                break
        with self._lock:
            self._run("DELETE FROM feedback WHERE created < ?", (before,))
        # The rollups go with the traces: the hours before `before`'s, and its own computed again from what is left.
        hour = math.floor(before / rollup.HOUR)
        with self._lock, self._transaction(lock_table="rollup_totals"):
            for table in rollup.TABLES:
                self._run(f"DELETE FROM {table} WHERE hour < ?", (hour,))
            if total and before > hour * rollup.HOUR:
                self._rebuild_rollups(hour, hour + 1)
        return total

    def cache_get(self, key: str, now: float) -> str | None:
        with self._lock:
            row = self._run("SELECT value FROM response_cache WHERE key = ? AND expires > ?", (key, now)).fetchone()
        return None if row is None else str(row[0])

    def cache_put(self, key: str, router: str, value: str, now: float, expires: float, max_entries: int) -> None:
        with self._lock, self._transaction():
            self._run("INSERT INTO response_cache (key, router, created, expires, value) VALUES (?,?,?,?,?) "
                      "ON CONFLICT (key) DO UPDATE SET created = excluded.created, expires = excluded.expires, "
                      "value = excluded.value", (key, router, now, expires, value))
            self._run("DELETE FROM response_cache WHERE expires <= ?", (now,))
            # The cap: the router's entries older than its max_entries-th newest go (the oldest written first).
            self._run("DELETE FROM response_cache WHERE router = ? AND created < (SELECT created FROM response_cache "
                      "WHERE router = ? ORDER BY created DESC LIMIT 1 OFFSET ?)", (router, router, max_entries - 1))

    def ping(self) -> bool:
        try:
            with self._lock:
                self._run("SELECT 1").fetchone()
        except Exception:  # noqa: BLE001 - unreachable, whatever the driver calls it
            return False
        return True

    def has_trace(self, trace_id: str) -> bool:
        with self._lock:
            return self._run("SELECT 1 FROM traces WHERE id = ?", (trace_id,)).fetchone() is not None

    def trace_client(self, trace_id: str) -> tuple[bool, str | None]:
        with self._lock:
            row = self._run("SELECT client FROM traces WHERE id = ?", (trace_id,)).fetchone()
        return (False, None) if row is None else (True, row[0])

    def count(self) -> int:
        with self._lock:
            return int(self._run("SELECT COUNT(*) FROM traces").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
