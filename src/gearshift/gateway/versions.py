"""Router versions in the running gateway: poll the store for promoted versions, recalibrate on a
schedule, and prove observing routers (store a proven version, promote it when asked to, demote a
serving router whose re-check fails)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gearshift.config import Config
from gearshift.routers.base import Router, ScoringRouter
from gearshift.routers.versions import apply_versions, promoted_versions, set_mode
from gearshift.store.base import TraceStore

log = logging.getLogger("gearshift.versions")


class VersionLoop:
    """Polls the store for promoted versions; runs scheduled recalibrations of routers that ask for it."""

    def __init__(self, config: Config, routers: dict[str, Router], store: TraceStore, clock: Any = time.time) -> None:
        self.config = config
        self.clock = clock  # schedules run on it (the lab's simulation gives its own)
        self.routers = routers
        self.store = store
        self.last_run: dict[str, float] = {}
        self.refused: set[tuple[Any, ...]] = set()
        self.recalibrations = 0
        self.last_proof: dict[str, float] = {}
        self.proven: dict[str, int] = {}  # router -> the proven version stored while it observes
        self.demotions = 0
        self.retrainings = 0
        # router -> when this process saw it start serving its own decisions: its re-checks read the pairs
        # since then, so each judges the traffic it served, not the evidence that promoted it again.
        self.serving_since: dict[str, float] = {}
        self.retry: dict[str, int] = {}  # router -> pairs its served model must have unseen before another refit
        # Proof checks made by this process (a figure for the simulation; the look each check is at is derived
        # from the pairs, never from this count: lab.proof.looks_due).
        self.checks: dict[str, int] = {}
        self.checked: dict[str, tuple[int | None, int]] = {}  # router -> (model, look) last checked: a cache only
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if any(isinstance(r, ScoringRouter) for r in self.routers.values()):
            self._task = asyncio.create_task(self._loop())

    async def poll(self) -> None:
        promoted = await asyncio.to_thread(promoted_versions, self.routers, self.store, self.config.base_dir,
                                           self.refused)
        scoring = {name: r for name, r in self.routers.items() if isinstance(r, ScoringRouter)}
        before = {name: r.mode for name, r in scoring.items()}
        apply_versions(self.routers, promoted, self.refused)
        for name, mode in before.items():
            if scoring[name].mode == "serve" and (mode != "serve" or name not in self.serving_since):
                self.serving_since[name] = self.clock()

    async def tick(self) -> None:
        """One round: apply promoted versions, run due recalibrations and proof checks."""
        await self.poll()
        await self._scheduled()
        await self._proofs()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a bad poll must not stop future ones
                log.exception("router version poll failed")
            await asyncio.sleep(self.config.server.version_poll_seconds)

    async def _scheduled(self) -> None:
        scheduled = {name: rc.recalibrate for name, rc in self.config.routers.items() if rc.recalibrate}
        # One process among those sharing the store recalibrates: N replicas must not store N versions.
        if not scheduled or not await asyncio.to_thread(self.store.leads, "recalibrate"):
            self.last_run.clear()  # on taking over, wait a full period from then
            return
        now = self.clock()
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

    async def _proofs(self) -> None:
        """Check the proof of each router configured to start in observe, every `proof.every_hours`."""
        now = self.clock()
        due = [r for r in self.routers.values() if isinstance(r, ScoringRouter) and r.observed
               and now - self.last_proof.get(r.name, 0.0) >= r.proof.every_hours * 3600]
        # One process among those sharing the store proves: N replicas must not store N versions.
        if not due or not await asyncio.to_thread(self.store.leads, "prove"):
            return
        for r in due:
            self.last_proof[r.name] = now
            try:
                await self.check(r)
            except (ValueError, KeyError) as e:
                log.warning("proof check of %s skipped: %s", r.name, e)

    async def check(self, r: ScoringRouter[Any]) -> None:
        """Prove `r` on its shadow pairs and act on the result."""
        from gearshift.lab.proof import prove
        from gearshift.lab.recalibrate import collect_pairs, trained_until

        opts = r.proof
        # A model trained on this gateway's pairs is proven on the pairs that came after (unseen); a serving
        # router is re-checked on the pairs since it started serving (fewer than min_pairs: no evidence yet).
        since = trained_until(r)
        if r.mode == "serve":
            since = max(since or 0.0, self.serving_since.get(r.name, 0.0))
        try:
            pairs, _ = await asyncio.to_thread(collect_pairs, self.store, r, since)
        except ValueError:  # no prompt answered by both models yet
            if r.mode == "observe":
                r.state, r.state_reason = "observing", f"observing: 0/{opts.min_pairs} pairs"
            return
        # An observing router is tested again and again: each check needs more confidence, so that all of them
        # together promote a router without signal at most at 1 - signal_confidence (lab.proof.look_confidence).
        # Check k of a model reads its first min_pairs * look_growth^(k-1) unseen pairs (in arrival order): the
        # number of checks grows like log(pairs), and which check is due, on which pairs, is derived from the
        # store alone, so a restarted gateway or another replica makes the same check, never a new one. A serving
        # router's re-check is one test: failing it by chance only demotes, the safe direction.
        look = model = None
        if r.mode == "observe" and len(pairs) >= opts.min_pairs:
            from gearshift.lab.proof import look_at, looks_due

            look = looks_due(len(pairs), opts.min_pairs, opts.look_growth)
            # Alpha is shared among a router's models only when it is refitted (it may then have several).
            model = await asyncio.to_thread(self._model_index, r) if opts.retrain else None
            if self.checked.get(r.name) == (model, look):  # this look's result is known: same pairs, same answer
                r.pairs = len(pairs)
                r.state_reason = f"{r.state_reason.split('; next check')[0]}; next check at " \
                                 f"{look_at(opts.min_pairs, opts.look_growth, look + 1)} pairs"
                return
            self.checked[r.name] = (model, look)
            self.checks[r.name] = self.checks.get(r.name, 0) + 1
        unseen = r.pairs = len(pairs)
        if r.mode == "serve":
            await self._recheck(r, pairs)
            return
        if look is not None and look_at(opts.min_pairs, opts.look_growth, look) < len(pairs):
            pairs, _ = await asyncio.to_thread(collect_pairs, self.store, r, since,
                                               look_at(opts.min_pairs, opts.look_growth, look))
        proof = await asyncio.to_thread(prove, pairs, r, opts.floor, opts.min_pairs, opts.confidence, look=look,
                                        signal_confidence=opts.signal_confidence if look is not None else None,
                                        model=model)
        if not proof.ok:
            r.state, r.state_reason = proof.state, proof.reason
            self.proven.pop(r.name, None)
            # Refitted once per `min_pairs` new pairs: a refit that found no signal waits for more data.
            if opts.retrain and proof.state != "observing" and unseen >= self.retry.get(r.name, 0):
                await self._retrain(r, unseen)
            return
        if r.name not in self.proven:
            assert proof.threshold is not None
            self.proven[r.name] = await asyncio.to_thread(self._store, r, proof.threshold, "serve", proof.metrics(),
                                                          opts.auto_promote)
            log.warning("router %s: proven, version %d stored%s: %s", r.name, self.proven[r.name],
                        " and promoted" if opts.auto_promote else "", proof.reason)
        version = self.proven[r.name]
        r.state = "proven"
        r.state_reason = f"{proof.reason}; version {version} " + (
            "promoted" if opts.auto_promote else f"waiting: `gearshift routers promote {r.name} {version}`")
        if opts.auto_promote:
            await self.poll()  # serve it now, not at the next poll

    async def _recheck(self, r: ScoringRouter[Any], pairs: Any) -> None:
        """Re-check a serving router on the pairs since it began serving; demote it on evidence that its proof
        no longer holds (lab.proof.recheck: the floor broken, or APGR at or below random), never merely for
        "no signal yet"."""
        from gearshift.lab.proof import recheck
        from gearshift.lab.replay import router_scores

        opts = r.proof
        if len(pairs) < opts.min_pairs:  # too few pairs is no evidence against it
            r.state, r.state_reason = "serving", f"serving: re-check at {len(pairs)}/{opts.min_pairs} pairs"
            return
        scores = await asyncio.to_thread(router_scores, r, pairs)
        failed, why = await asyncio.to_thread(recheck, scores, pairs, r.weak, r.strong, r.threshold, opts.floor,
                                              opts.confidence)
        if not failed:
            r.state, r.state_reason = "serving", f"serving: {why}"
            return
        metrics = {"recheck": why, "pairs": len(pairs), "floor": opts.floor, "confidence": opts.confidence}
        version = await asyncio.to_thread(self._store, r, r.threshold, "observe", metrics, True)
        self.demotions += 1
        set_mode(r, "observe")
        self.proven.pop(r.name, None)
        r.state, r.state_reason = "observing", f"demoted (version {version}): {why}"
        log.warning("router %s: DEMOTED to observe, serving safe model %s (version %d): %s", r.name, r.safe,
                    version, why)

    async def _retrain(self, r: ScoringRouter[Any], unseen: int) -> None:
        """A classifier whose proof failed on enough pairs is refitted on all of them (lab.retrain); the new
        model, still observing, must then prove itself on the pairs that come after."""
        from gearshift.lab.retrain import retrain
        from gearshift.routers.classifier import ClassifierRouter

        if not isinstance(r, ClassifierRouter) or r.model.featurizer.encoder is not None:
            return
        opts = r.proof
        try:
            result = await asyncio.to_thread(retrain, self.config, self.store, r.name, opts.floor, None,
                                             opts.min_pairs, 0.3, "gateway proof check (retrain)", True,
                                             1 - opts.confidence, 0, self.clock())
        except (ValueError, TypeError) as e:
            log.warning("retraining of %s skipped: %s", r.name, e)
            return
        self.retrainings += 1
        self.retry[r.name] = 0 if result.promoted else unseen + opts.min_pairs
        log.warning("router %s: retrained on %d pairs, version %d%s", r.name, result.pairs, result.version,
                    f" ({result.refused})" if result.refused else " (observing until proven on new pairs)")
        if result.promoted:
            await self.poll()

    def _model_index(self, r: ScoringRouter[Any]) -> int:
        """Which of the router's models it observes with: 1 for the configured one, then each retrained artifact
        in the order its versions were stored (from the store, so every process counts alike)."""
        artifact = getattr(r, "artifact", None)
        if artifact is None or artifact == getattr(r, "configured_artifact", None):
            return 1
        seen: list[str] = []
        for v in self.store.router_versions(r.name):
            a = (v.get("settings") or {}).get("artifact")
            if a and a != r.configured_artifact and a not in seen:  # type: ignore[attr-defined]
                seen.append(a)
        return seen.index(artifact) + 2 if artifact in seen else len(seen) + 2

    def _store(self, r: ScoringRouter[Any], threshold: float, mode: str, proof: dict[str, Any], promote: bool) -> int:
        from gearshift.routers.classifier import ClassifierRouter

        by = "gateway proof check"
        settings: dict[str, Any] = {"threshold": threshold, "mode": mode}
        if isinstance(r, ClassifierRouter) and r.artifact != r.configured_artifact:
            settings["artifact"] = r.artifact  # the threshold was proven for the retrained model it serves
        # A proof made again after a restart (the same look on the same pairs) is the version stored then.
        same = [v["version"] for v in self.store.router_versions(r.name)
                if mode == "serve" and v["settings"] == settings and v["metrics"] == {"proof": proof}]
        version = same[-1] if same else self.store.add_router_version(r.name, settings, {"proof": proof}, by)
        if promote:
            self.store.promote(r.name, version, by)
        return version

    def states(self) -> dict[str, dict[str, Any]]:
        """Each scoring router's mode, state and proof progress (for /health and /metrics)."""
        return {name: {"mode": r.mode, "state": r.state, "reason": r.state_reason, "pairs": r.pairs,
                       "min_pairs": r.proof.min_pairs if r.observed else None, "threshold": r.threshold,
                       "safe": r.safe}
                for name, r in self.routers.items() if isinstance(r, ScoringRouter) and hasattr(r, "strong")}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
