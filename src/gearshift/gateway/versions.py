"""Router versions in the running gateway: poll the store for promoted versions, and recalibrate on a
schedule."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gearshift.config import Config
from gearshift.routers.base import Router, ScoringRouter
from gearshift.routers.versions import apply_versions, promoted_versions
from gearshift.store.base import TraceStore

log = logging.getLogger("gearshift.versions")


class VersionLoop:
    """Polls the store for promoted versions; runs scheduled recalibrations of routers that ask for it."""

    def __init__(self, config: Config, routers: dict[str, Router], store: TraceStore) -> None:
        self.config = config
        self.routers = routers
        self.store = store
        self.last_run: dict[str, float] = {}
        self.refused: set[tuple[Any, ...]] = set()
        self.recalibrations = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if any(isinstance(r, ScoringRouter) for r in self.routers.values()):
            self._task = asyncio.create_task(self._loop())

    async def poll(self) -> None:
        promoted = await asyncio.to_thread(promoted_versions, self.routers, self.store, self.config.base_dir,
                                           self.refused)
        apply_versions(self.routers, promoted, self.refused)

    async def _loop(self) -> None:
        while True:
            try:
                await self.poll()
                await self._scheduled()
            except Exception:  # a bad poll must not stop future ones
                log.exception("router version poll failed")
            await asyncio.sleep(self.config.server.version_poll_seconds)

    async def _scheduled(self) -> None:
        scheduled = {name: rc.recalibrate for name, rc in self.config.routers.items() if rc.recalibrate}
        # One process among those sharing the store recalibrates: N replicas must not store N versions.
        if not scheduled or not await asyncio.to_thread(self.store.leads, "recalibrate"):
            self.last_run.clear()  # on taking over, wait a full period from then
            return
        now = time.time()
        for name, rec in scheduled.items():
            last = self.last_run.setdefault(name, now)  # the first run comes one period after start
            if now - last < rec.every_hours * 3600:
                continue
            self.last_run[name] = now
            self.recalibrations += 1
            from gearshift.lab.recalibrate import recalibrate

            try:
                result = await asyncio.to_thread(recalibrate, self.config, self.store, name, rec.floor,
                                                 now - rec.window_hours * 3600, rec.min_pairs,
                                                 "gateway schedule", rec.auto_apply)
            except (ValueError, TypeError, KeyError) as e:
                log.warning("scheduled recalibration of %s skipped: %s", name, e)
                continue
            log.info("router %s recalibrated on %d pairs: version %d, threshold %.6g%s", name, result.pairs,
                     result.version, result.calibration.threshold, " (applied)" if result.promoted else
                     " (run `gearshift routers promote` to apply)")
            if result.refused:  # auto_apply refused: the router showed no signal on this traffic
                log.warning("router %s version %d %s", name, result.version, result.refused)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
