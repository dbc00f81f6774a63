"""Trace stores: SQLite by default, PostgreSQL for several gateway replicas; `store.url` chooses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gearshift.store.base import TraceStore, redact_url

if TYPE_CHECKING:
    from gearshift.config import StoreConfig


def open_store(store: StoreConfig | str, base_dir: str = ".") -> TraceStore:
    """Open the store a config (or a URL) names: sqlite:///PATH (relative to base_dir) or postgresql://...

    Raises StoreError when it cannot be opened (the message masks any password)."""
    url = store if isinstance(store, str) else store.url
    if url.startswith("sqlite:///"):
        from gearshift.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url, base_dir)
    if url.startswith(("postgresql://", "postgres://")):
        from gearshift.store.postgres import PostgresStore

        return PostgresStore(url, password=None if isinstance(store, str) else store.password())
    raise ValueError(f"store url {redact_url(url)!r}: use sqlite:///PATH or postgresql://...")


__all__ = ["TraceStore", "open_store", "redact_url"]
