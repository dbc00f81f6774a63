"""Trace stores: SQLite by default, PostgreSQL for several gateway replicas; `store.url`'s scheme chooses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gearshift.registry import Registry
from gearshift.store.base import TraceStore, redact_url

if TYPE_CHECKING:
    from gearshift.config import StoreConfig

# Kinds are URL schemes (sqlite, postgresql/postgres); driver imports wait until a store opens.
STORES: Registry[TraceStore] = Registry("gearshift.store", TraceStore, "store kind")


def check_url(url: str, where: str = "store.url") -> str | None:
    """The problem line of a store URL whose scheme names no store kind, else None."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    cls = STORES.get(scheme)
    if cls is not None and cls.url_ok(url):
        return None
    forms = sorted({cls.url_form for cls in STORES.values() if cls.url_form})
    return f"{where}: bad value {redact_url(url)!r}; allowed: a URL like {' or '.join(forms)}"


def open_store(store: StoreConfig | str, base_dir: str = ".") -> TraceStore:
    """Open the store a config (or a URL) names: sqlite:///PATH (relative to base_dir) or postgresql://...

    Raises StoreError when it cannot be opened (the message masks any password)."""
    url = store if isinstance(store, str) else store.url
    problem = check_url(url)
    if problem is not None:
        raise ValueError(problem.removeprefix("store.url: "))
    cls = STORES[url.split("://", 1)[0]]
    return cls.open_url(url, base_dir, None if isinstance(store, str) else store.password())


__all__ = ["STORES", "TraceStore", "check_url", "open_store", "redact_url"]
