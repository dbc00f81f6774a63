"""Trace retention in the running gateway: traces and feedback older than `store.retention_days` go."""

from __future__ import annotations

import asyncio
import logging
import time

from gearshift.config import Config
from gearshift.store.base import TraceStore

log = logging.getLogger("gearshift.store")

PRUNE_EVERY = 3600.0


class RetentionLoop:
    """Prunes the store at start and then hourly, when the config sets a retention."""

    def __init__(self, config: Config, store: TraceStore) -> None:
        self.days = config.store.retention_days
        self.store = store
        self.pruned = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.days is not None:
            self._task = asyncio.create_task(self._loop())

    async def prune_once(self) -> int:
        assert self.days is not None
        if not await asyncio.to_thread(self.store.leads, "retention"):
            return 0  # another process sharing the store prunes
        n = await asyncio.to_thread(self.store.prune, time.time() - self.days * 86400)
        self.pruned += n
        if n:
            log.info("retention: deleted %d traces older than %g days", n, self.days)
        return n

    async def _loop(self) -> None:
        while True:
            try:
                await self.prune_once()
            except Exception as e:  # the store may be down; the next round catches up
                log.warning("retention: pruning failed: %s", e)
            await asyncio.sleep(PRUNE_EVERY)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
