"""SQLite trace store: one file, WAL, zero set-up."""

from __future__ import annotations

import fcntl
import sqlite3
from pathlib import Path
from typing import IO

from gearshift.store.sql import SQLStore


class SQLiteStore(SQLStore):
    kind = "sqlite"
    url_form = "sqlite:///PATH"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; the shared SQL begins and ends its own.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._duties: dict[str, IO[bytes]] = {}
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # The database's write lock: one process creates or upgrades the schema at a time.
            with self._transaction(lock_table="traces"):
                self._create_schema(real="REAL", serial_pk="INTEGER PRIMARY KEY AUTOINCREMENT")

    @classmethod
    def url_ok(cls, url: str) -> bool:
        return url.startswith("sqlite:///")

    @classmethod
    def open_url(cls, url: str, base_dir: str = ".", password: str | None = None) -> SQLiteStore:
        return cls.from_url(url, base_dir)

    @classmethod
    def from_url(cls, url: str, base_dir: str = ".") -> SQLiteStore:
        path = url.removeprefix("sqlite:///")
        if path != ":memory:" and not Path(path).is_absolute():
            path = str(Path(base_dir) / path)
        return cls(path)

    def leads(self, duty: str) -> bool:
        # Processes on one machine sharing the file (`serve --workers`): an flock beside it, held
        # while this store is open; the kernel releases it when the process ends.
        if self.path == ":memory:" or duty in self._duties:
            return True
        f = open(f"{self.path}.{duty}.lock", "ab")  # noqa: SIM115 - kept open: it holds the lock
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        self._duties[duty] = f
        return True

    def close(self) -> None:
        for f in self._duties.values():
            f.close()
        self._duties.clear()
        super().close()

    def _column_names(self, table: str) -> set[str]:
        return {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}

    def _begin_write(self, table: str) -> None:
        # IMMEDIATE takes the database's write lock now, not at the first write: two processes
        # numbering versions cannot both read the same last number.
        self._run("BEGIN IMMEDIATE")
