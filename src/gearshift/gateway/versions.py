"""Router versions in the running gateway: apply promoted thresholds, and recalibrate on a schedule."""

from __future__ import annotations

import asyncio
import logging
import time

from gearshift.config import Config
from gearshift.routers.base import Router, ScoringRouter
from gearshift.store.base import TraceStore

log = logging.getLogger("gearshift.versions")


def promoted_thresholds(routers: dict[str, Router], store: TraceStore) -> dict[str, float]:
    """The threshold of each scoring router's promoted version (reads the store: call off the loop)."""
    out = {}
    for name, r in routers.items():
        if isinstance(r, ScoringRouter):
            v = store.active_version(name)
            if v is not None and "threshold" in v["settings"]:
                out[name] = float(v["settings"]["threshold"])
    return out


def apply_thresholds(routers: dict[str, Router], thresholds: dict[str, float]) -> None:
    for name, t in thresholds.items():
        r = routers[name]
        if isinstance(r, ScoringRouter) and r.threshold != t:
            log.info("router %s: threshold %.6g -> %.6g (promoted version)", name, r.threshold, t)
            r.threshold = t


class VersionLoop:
    """Polls the store for promoted versions; runs scheduled recalibrations of routers that ask for it."""

    def __init__(self, config: Config, routers: dict[str, Router], store: TraceStore) -> None:
        self.config = config
        self.routers = routers
        self.store = store
        self.last_run: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if any(isinstance(r, ScoringRouter) for r in self.routers.values()):
            self._task = asyncio.create_task(self._loop())

    async def poll(self) -> None:
        apply_thresholds(self.routers, await asyncio.to_thread(promoted_thresholds, self.routers, self.store))

    async def _loop(self) -> None:
        while True:
            try:
                await self.poll()
                await self._scheduled()
            except Exception:  # a bad poll must not stop future ones
                log.exception("router version poll failed")
            await asyncio.sleep(self.config.server.version_poll_seconds)

    async def _scheduled(self) -> None:
        now = time.time()
        for name, rc in self.config.routers.items():
            rec = rc.recalibrate
            if rec is None:
                continue
            last = self.last_run.setdefault(name, now)  # the first run comes one period after start
            if now - last < rec.every_hours * 3600:
                continue
            self.last_run[name] = now
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

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
