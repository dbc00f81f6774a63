"""PostgreSQL trace store: one database shared by several gateway replicas (and the CLI).

Needs the `postgres` extra (psycopg 3 with its bundled libpq). The password comes from the
config's `store.password_env`, libpq's own PGPASSWORD or ~/.pgpass, or the URL; it never appears
in a log line or an error, which name the URL with the password masked.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from typing import Any

from gearshift.errors import StoreError
from gearshift.store.base import redact_url
from gearshift.store.sql import SQLStore

log = logging.getLogger("gearshift.store")

# Any constant: the advisory lock that serialises schema creation between replicas starting together.
_SCHEMA_LOCK = 0x6765_6172


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError("a postgresql:// store needs psycopg: pip install 'gearshift[postgres]'") from None
    return psycopg


class PostgresStore(SQLStore):
    kind = "postgresql"
    aliases = ("postgres",)
    url_form = "postgresql://USER@HOST:PORT/DB"
    placeholder = "%s"
    shared = True

    def __init__(self, url: str, password: str | None = None, connect_timeout: float = 10.0) -> None:
        super().__init__()
        self.url = url
        self._password = password
        self._timeout = connect_timeout
        self._psycopg = _driver()
        with self._lock:
            self._db = self._connect()
            with self._transaction():
                self._run("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
                self._create_schema(real="DOUBLE PRECISION", serial_pk="BIGSERIAL PRIMARY KEY")

    @classmethod
    def open_url(cls, url: str, base_dir: str = ".", password: str | None = None) -> PostgresStore:
        return cls(url, password=password)

    def _connect(self) -> Any:
        extra: dict[str, Any] = {"password": self._password} if self._password else {}
        try:
            # autocommit: the shared SQL begins and ends its own transactions.
            return self._psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self._timeout)),
                                         application_name="gearshift", **extra)
        except self._psycopg.Error as e:
            raise StoreError(f"store {redact_url(self.url)}: cannot connect: {self._scrub(e)}") from None

    def _scrub(self, e: BaseException) -> str:
        text = str(e).strip()
        return text.replace(self._password, "***") if self._password else text

    def _connection(self) -> Any:
        # A connection lost to a database restart or a network blip is replaced at the next use;
        # the statement that found it broken failed, and its caller retries (the trace writer does).
        if self._db is None or self._db.closed or self._db.broken:
            log.warning("store %s: connection lost, reconnecting", redact_url(self.url))
            self._db = self._connect()
        return self._db

    def _run(self, sql: str, args: Sequence[Any] = ()) -> Any:
        # A statement of its own (outside a transaction) that finds the connection dead is run again
        # once on a new one: the first reader after a database restart should not be the one to fail.
        try:
            return super()._run(sql, args)
        except self._psycopg.OperationalError:
            if self._in_transaction or self._db is None or not self._db.broken:
                raise
            return super()._run(sql, args)

    def leads(self, duty: str) -> bool:
        # A session-level advisory lock: held while this connection lives, released by the server
        # when the replica goes away (or its connection does), then taken by the next to ask.
        # Asked of the server every time: the answer also proves the connection, and with it the
        # lock, is still there. (A 32-bit key shows in pg_locks as classid 0, objid key.)
        key = zlib.crc32(f"gearshift:{duty}".encode())
        try:
            with self._lock:
                (got,) = self._run(
                    "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid = pg_backend_pid() AND classid = 0 AND objid = ?::bigint::oid AND objsubid = 1)"
                    " THEN true ELSE pg_try_advisory_lock(?) END", (key, key)).fetchone()
        except Exception:  # noqa: BLE001 - unreachable: nobody can tell, so do not act
            return False
        return bool(got)

    def _clean(self, values: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        # PostgreSQL text cannot hold NUL characters, which a prompt or an answer may carry: they
        # become U+FFFD rather than costing the whole trace.
        return [tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) and "\x00" in v else v for v in row)
                for row in values]

    def _column_names(self, table: str) -> set[str]:
        found = self._run("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                          " AND table_name = ?", (table,)).fetchall()
        return {r[0] for r in found}

    def _begin_write(self, table: str) -> None:
        self._run("BEGIN")
        # Blocks other writers of the table (not readers) until this transaction ends.
        self._run(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
