"""Live config: what a reload may change at once, what waits for a restart, and the file watch.

A reload goes through the same door as `check-config` and `serve` (gearshift.plan.load): a config
that door refuses is never swapped in, and its problems are logged as `check-config` prints them."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

from gearshift.config import Config

log = logging.getLogger("gearshift.gateway")

# Settings bound when the process starts (its socket, its workers, its store and writer, its queues):
# a reload that changes them applies everything else, and says these wait for a restart.
RESTART_ONLY = ("server.host", "server.port", "server.workers", "server.max_body_bytes",
                "server.header_timeout_seconds", "server.max_connections_per_client", "server.shadow_workers",
                "server.shadow_queue_size", "server.key_secret_env", "server.key_cache_seconds", "store")


def _get(config: Config, dotted: str) -> object:
    value: object = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def restart_only(old: Config, new: Config) -> list[str]:
    """The keys that differ between two configs and take effect only at the next restart."""
    return [key for key in RESTART_ONLY if _get(old, key) != _get(new, key)]


class FileWatch:
    """Calls `reload` when the config file's modification time or size changes (polled, no extra dependency)."""

    def __init__(self, path: str, every: float, reload: Callable[[], Awaitable[bool]]) -> None:
        self.path, self.every, self.reload = path, every, reload
        self._seen = self._stamp()
        self._task: asyncio.Task[None] | None = None

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            stamp = self._stamp()
            if stamp is not None and stamp != self._seen:
                self._seen = stamp
                log.info("config file %s changed: reloading", self.path)
                await self.reload()
