"""SQLite trace store: one file, WAL, zero set-up."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gearshift.store.base import TraceStore
from gearshift.trace import Trace

SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    router TEXT NOT NULL,
    requested_model TEXT NOT NULL,
    reason TEXT,
    route TEXT,
    final_model TEXT,
    status INTEGER NOT NULL,
    streamed INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    latency_ms REAL NOT NULL,
    estimated_tokens INTEGER,
    score REAL,
    client TEXT,
    metadata TEXT,
    verdicts TEXT,
    prompt TEXT,
    response TEXT,
    error TEXT,
    arm TEXT,
    shadowed INTEGER NOT NULL DEFAULT 0,
    shadow_cost_usd REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS traces_created ON traces(created);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL,
    created REAL NOT NULL,
    score REAL NOT NULL,
    label TEXT,
    source TEXT,
    comment TEXT
);
CREATE INDEX IF NOT EXISTS feedback_trace ON feedback(trace_id);
CREATE TABLE IF NOT EXISTS router_versions (
    router TEXT NOT NULL,
    version INTEGER NOT NULL,
    created REAL NOT NULL,
    created_by TEXT NOT NULL,
    settings TEXT NOT NULL,
    metrics TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    promoted_by TEXT,
    promoted_at REAL,
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
    cost_usd REAL NOT NULL,
    latency_ms REAL NOT NULL,
    status INTEGER NOT NULL,
    error TEXT,
    attempt INTEGER NOT NULL,
    response TEXT,
    PRIMARY KEY (trace_id, idx)
);
"""

_TRACE_COLS = ("id", "created", "router", "requested_model", "reason", "route", "final_model", "status",
               "streamed", "cost_usd", "latency_ms", "estimated_tokens", "score", "client", "metadata",
               "verdicts", "prompt", "response", "error", "arm", "shadowed", "shadow_cost_usd")
_CALL_COLS = ("trace_id", "idx", "model", "role", "input_tokens", "output_tokens", "usage_estimated",
              "cost_usd", "latency_ms", "status", "error", "attempt", "response")


class SQLiteStore(TraceStore):
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # One connection guarded by a lock: the writer thread and CLI readers may share a store object.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    @classmethod
    def from_url(cls, url: str, base_dir: str = ".") -> SQLiteStore:
        path = url.removeprefix("sqlite:///")
        if path != ":memory:" and not Path(path).is_absolute():
            path = str(Path(base_dir) / path)
        return cls(path)

    def write(self, traces: Sequence[Trace]) -> None:
        if not traces:
            return
        trows, crows = [], []
        for t in traces:
            trows.append((t.id, t.created, t.router, t.requested_model, t.reason, json.dumps(t.route),
                          t.final_model, t.status, int(t.streamed), t.cost_usd, t.latency_ms, t.estimated_tokens,
                          t.score, t.client, json.dumps(t.metadata), json.dumps(t.verdicts), t.prompt, t.response,
                          t.error, t.arm, int(t.shadowed), t.shadow_cost_usd))
            for i, c in enumerate(t.calls):
                crows.append((t.id, i, c.model, c.role, c.input_tokens, c.output_tokens, int(c.usage_estimated),
                              c.cost_usd, c.latency_ms, c.status, c.error, c.attempt, c.response))
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO traces ({','.join(_TRACE_COLS)}) VALUES ({','.join('?' * len(_TRACE_COLS))})",
                    trows)
                self._db.executemany(
                    f"INSERT OR REPLACE INTO calls ({','.join(_CALL_COLS)}) VALUES ({','.join('?' * len(_CALL_COLS))})",
                    crows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def traces(self, since: float | None = None, router: str | None = None,
               limit: int | None = None) -> Iterator[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
        if since is not None:
            where.append("created >= ?")
            args.append(since)
        if router is not None:
            where.append("router = ?")
            args.append(router)
        sql = f"SELECT {','.join(_TRACE_COLS)} FROM traces"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
            calls: dict[str, list[dict[str, Any]]] = {}
            ids = [r[0] for r in rows]
            for chunk in range(0, len(ids), 500):
                part = ids[chunk:chunk + 500]
                q = f"SELECT {','.join(_CALL_COLS)} FROM calls WHERE trace_id IN ({','.join('?' * len(part))}) ORDER BY trace_id, idx"
                for c in self._db.execute(q, part):
                    d = dict(zip(_CALL_COLS, c, strict=True))
                    d["usage_estimated"] = bool(d["usage_estimated"])
                    calls.setdefault(d.pop("trace_id"), []).append(d)
        for r in rows:
            d = dict(zip(_TRACE_COLS, r, strict=True))
            d["route"] = json.loads(d["route"] or "[]")
            d["metadata"] = json.loads(d["metadata"] or "{}")
            d["verdicts"] = json.loads(d["verdicts"] or "[]")
            d["streamed"] = bool(d["streamed"])
            d["shadowed"] = bool(d["shadowed"])
            d["calls"] = calls.get(d["id"], [])
            yield d

    def shadow_spend(self, since: float) -> list[tuple[str, str | None, float]]:
        with self._lock:
            return [(r, a, float(usd)) for r, a, usd in self._db.execute(
                "SELECT router, arm, SUM(shadow_cost_usd) FROM traces WHERE created >= ? AND shadowed = 1 "
                "GROUP BY router, arm", (since,))]

    def write_feedback(self, trace_id: str, score: float, label: str | None = None, source: str | None = None,
                       comment: str | None = None) -> None:
        with self._lock:
            self._db.execute("INSERT INTO feedback (trace_id, created, score, label, source, comment) VALUES (?,?,?,?,?,?)",
                             (trace_id, time.time(), score, label, source, comment))

    def feedback(self, since: float | None = None) -> list[dict[str, Any]]:
        cols = ("trace_id", "created", "score", "label", "source", "comment")
        sql = f"SELECT {','.join(cols)} FROM feedback" + (" WHERE created >= ?" if since is not None else "") + " ORDER BY id"
        with self._lock:
            rows = self._db.execute(sql, () if since is None else (since,)).fetchall()
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def add_router_version(self, router: str, settings: dict[str, Any], metrics: dict[str, Any],
                           created_by: str) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (last,) = self._db.execute("SELECT COALESCE(MAX(version), 0) FROM router_versions WHERE router = ?",
                                           (router,)).fetchone()
                version = int(last) + 1
                self._db.execute("INSERT INTO router_versions (router, version, created, created_by, settings, metrics)"
                                 " VALUES (?,?,?,?,?,?)",
                                 (router, version, time.time(), created_by, json.dumps(settings), json.dumps(metrics)))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return version

    def router_versions(self, router: str | None = None) -> list[dict[str, Any]]:
        cols = ("router", "version", "created", "created_by", "settings", "metrics", "active", "promoted_by",
                "promoted_at")
        sql = f"SELECT {','.join(cols)} FROM router_versions" + (" WHERE router = ?" if router else "")
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY router, version", (router,) if router else ()).fetchall()
        out = []
        for r in rows:
            d = dict(zip(cols, r, strict=True))
            d["settings"], d["metrics"], d["active"] = json.loads(d["settings"]), json.loads(d["metrics"]), bool(d["active"])
            out.append(d)
        return out

    def promote(self, router: str, version: int, by: str) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                found = self._db.execute("SELECT 1 FROM router_versions WHERE router = ? AND version = ?",
                                         (router, version)).fetchone()
                if not found:
                    raise KeyError(f"router {router!r} has no version {version}")
                self._db.execute("UPDATE router_versions SET active = 0 WHERE router = ?", (router,))
                self._db.execute("UPDATE router_versions SET active = 1, promoted_by = ?, promoted_at = ? "
                                 "WHERE router = ? AND version = ?", (by, time.time(), router, version))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def has_trace(self, trace_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM traces WHERE id = ?", (trace_id,)).fetchone() is not None

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM traces").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
