"""Trace stores: SQLite by default; a store is chosen by the config's `store.url`."""

from __future__ import annotations

from gearshift.store.base import TraceStore


def open_store(url: str, base_dir: str = ".") -> TraceStore:
    """Open the store a URL names: sqlite:///PATH (relative to base_dir) or postgresql://..."""
    if url.startswith("sqlite:///"):
        from gearshift.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url, base_dir)
    if url.startswith(("postgresql://", "postgres://")):
        from gearshift.store.postgres import PostgresStore  # type: ignore[import-not-found]

        return PostgresStore(url)  # type: ignore[no-any-return]
    raise ValueError(f"store url {url!r}: use sqlite:///PATH or postgresql://...")


__all__ = ["TraceStore", "open_store"]
