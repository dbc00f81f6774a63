"""SQLite trace store: one file, WAL, zero set-up."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gearshift.store.sql import SQLStore, schema


class SQLiteStore(SQLStore):
    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; the shared SQL begins and ends its own.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(";\n".join(schema(real="REAL", serial_pk="INTEGER PRIMARY KEY AUTOINCREMENT")))

    @classmethod
    def from_url(cls, url: str, base_dir: str = ".") -> SQLiteStore:
        path = url.removeprefix("sqlite:///")
        if path != ":memory:" and not Path(path).is_absolute():
            path = str(Path(base_dir) / path)
        return cls(path)

    def _begin_write(self, table: str) -> None:
        # IMMEDIATE takes the database's write lock now, not at the first write: two processes
        # numbering versions cannot both read the same last number.
        self._run("BEGIN IMMEDIATE")
