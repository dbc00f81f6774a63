"""Router versions in the running gateway: apply promoted thresholds and retrained classifier
artifacts, and recalibrate on a schedule."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gearshift.artifact import ArtifactError
from gearshift.config import Config
from gearshift.routers.base import Router, ScoringRouter
from gearshift.store.base import TraceStore

log = logging.getLogger("gearshift.versions")


@dataclass
class Promoted:
    """What a router's promoted version asks of it: a threshold, and for a retrained classifier, its model."""

    threshold: float
    artifact: str | None = None
    model: Any = None  # the loaded classifier Model, when the artifact differs from the one served
    refusal_key: tuple[Any, ...] | None = None  # which refusal to remember if the router refuses the model


def _file_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def promoted_versions(routers: dict[str, Router], store: TraceStore, base_dir: str = ".",
                      refused: set[tuple[Any, ...]] | None = None) -> dict[str, Promoted]:
    """Each scoring router's promoted version (reads the store and loads new artifacts: call off the loop).

    `refused` remembers (router, version, artifact file state) whose artifact could not be used: such a
    version is logged once and not loaded again until its file changes or another version is promoted."""
    from gearshift.routers.classifier import ClassifierRouter, Model

    refused = set() if refused is None else refused
    out = {}
    for name, r in routers.items():
        if not isinstance(r, ScoringRouter):
            continue
        v = store.active_version(name)
        if v is None or "threshold" not in v["settings"]:
            continue
        p = Promoted(float(v["settings"]["threshold"]), v["settings"].get("artifact"))
        if isinstance(r, ClassifierRouter):
            # A version without an artifact was calibrated for the config's artifact.
            p.artifact = p.artifact or r.configured_artifact
        if p.artifact and isinstance(r, ClassifierRouter) and p.artifact != r.artifact:
            path = Path(p.artifact) if Path(p.artifact).is_absolute() else Path(base_dir) / p.artifact
            p.refusal_key = (name, v["version"], str(path), _file_key(path))
            if p.refusal_key in refused:
                continue
            try:
                p.model = Model.load(path, r.model.featurizer.encoder)
            except (ArtifactError, OSError) as e:
                refused.add(p.refusal_key)
                log.error("router %s: promoted version %s has an unusable artifact, kept the served one "
                          "(retried when the file changes or another version is promoted): %s", name, v["version"], e)
                continue
        out[name] = p
    return out


def apply_versions(routers: dict[str, Router], promoted: dict[str, Promoted],
                   refused: set[tuple[Any, ...]] | None = None) -> None:
    from gearshift.routers.classifier import ClassifierRouter

    for name, p in promoted.items():
        r = routers[name]
        if p.model is not None and isinstance(r, ClassifierRouter):
            try:
                r.use(p.model, str(p.artifact), p.threshold)
            except ArtifactError as e:
                if refused is not None and p.refusal_key is not None:
                    refused.add(p.refusal_key)
                log.error("router %s: promoted artifact refused, kept the served one: %s", name, e)
                continue
            log.info("router %s: now serving %s at threshold %.6g (promoted version)", name, p.artifact, p.threshold)
        elif isinstance(r, ScoringRouter) and r.threshold != p.threshold:
            log.info("router %s: threshold %.6g -> %.6g (promoted version)", name, r.threshold, p.threshold)
            r.threshold = p.threshold


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

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
