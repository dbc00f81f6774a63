"""The trace store interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

from gearshift.trace import Trace


class TraceStore(ABC):
    """Durable traces. Writes come in batches from one writer thread; reads may come from anywhere."""

    @abstractmethod
    def write(self, traces: Sequence[Trace]) -> None:
        """Persist a batch atomically."""

    @abstractmethod
    def traces(self, since: float | None = None, router: str | None = None,
               limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Traces as dicts (with a `calls` list), oldest first."""

    @abstractmethod
    def count(self) -> int:
        """How many traces are stored."""

    def close(self) -> None:  # noqa: B027 - stores without a connection need not override it
        """Release the connection."""
