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
        self.retrainings = 0  # learners proven by cross-fit and refitted
        # router -> when this process saw it start serving its own decisions: its re-checks read the pairs
        # since then, so each judges the traffic it served, not the evidence that promoted it again.
        self.serving_since: dict[str, float] = {}
        # Proof checks made by this process (a figure for the simulation; the look each check is at is derived
        # from the pairs, never from this count: lab.proof.looks_due).
        self.checks: dict[str, int] = {}
        # Caches only (the same look reads the same pairs, so gives the same answer): router -> (look, proven,
        # state, reason) of its own model's last check, and (look, reason, version stored or None) of its learner's.
        self.checked: dict[str, tuple[int, bool, str, str]] = {}
        self.learner_checked: dict[str, tuple[int, str, int | None]] = {}
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
        r.pairs = len(pairs)
        # With `retrain`, alpha is split (lab.proof.LEARNER_SHARE): the configured model's checks hold one part,
        # the learner's cross-fit checks the other. A refitted model observing again (demoted) has no checks of
        # its own: the learner's, on every pair, speak for the procedure that made it.
        from gearshift.lab.proof import LEARNER_SHARE, look_at, looks_due

        learner = opts.retrain and self._refits(r)
        if r.mode == "serve":
            await self._recheck(r, pairs)
            # Still serving: the learner's next look may refit it on more pairs.
            if r.mode == "serve" and learner and await self._prove_learner(r, LEARNER_SHARE, serving=True):
                r.state = "serving"  # the refit, or (without auto_promote) the model before it; the reason says which
            return
        own = not learner or getattr(r, "artifact", None) == getattr(r, "configured_artifact", None)
        if own and await self._prove_own(r, pairs, since, 1 - LEARNER_SHARE if learner else 1.0):
            return
        if not own:
            r.state = "observing" if r.pairs < opts.min_pairs else "no_signal"
            r.state_reason = f"observing a refitted model: {r.pairs} pairs since its training"
        if learner and await self._prove_learner(r, LEARNER_SHARE):
            return
        if r.pairs >= opts.min_pairs:
            after = look_at(opts.min_pairs, opts.look_growth, looks_due(r.pairs, opts.min_pairs, opts.look_growth) + 1)
            r.state_reason += f"; next check at {after} pairs"

    async def _prove_own(self, r: ScoringRouter[Any], pairs: Any, since: float | None, share: float) -> bool:
        """Check the router's own model at the look its pairs are due for (holding `share` of alpha); whether
        it is proven."""
        from gearshift.lab.proof import look_at, looks_due, prove
        from gearshift.lab.recalibrate import collect_pairs

        opts = r.proof
        # An observing router is tested again and again: each check needs more confidence, so that all of them
        # together promote a router without signal at most at 1 - signal_confidence (lab.proof.look_confidence).
        # Check k of a model reads its first min_pairs * look_growth^(k-1) unseen pairs (in arrival order): the
        # number of checks grows like log(pairs), and which check is due, on which pairs, is derived from the
        # store alone, so a restarted gateway or another replica makes the same check, never a new one. A serving
        # router's re-check is one test: failing it by chance only demotes, the safe direction.
        look = None
        if len(pairs) >= opts.min_pairs:
            look = looks_due(len(pairs), opts.min_pairs, opts.look_growth)
            known = self.checked.get(r.name)
            if known is not None and known[0] == look:  # this look's result is known: same pairs, same answer
                if not known[1]:
                    r.state, r.state_reason = known[2], known[3]
                return known[1]
            self.checks[r.name] = self.checks.get(r.name, 0) + 1
            if look_at(opts.min_pairs, opts.look_growth, look) < len(pairs):
                pairs, _ = await asyncio.to_thread(collect_pairs, self.store, r, since,
                                                   look_at(opts.min_pairs, opts.look_growth, look))
        proof = await asyncio.to_thread(prove, pairs, r, opts.floor, opts.min_pairs, opts.confidence, look=look,
                                        signal_confidence=opts.signal_confidence if look is not None else None,
                                        share=share)
        if look is not None:
            self.checked[r.name] = (look, proof.ok, proof.state, proof.reason)
        if not proof.ok:
            r.state, r.state_reason = proof.state, proof.reason
            self.proven.pop(r.name, None)
            return False
        if r.name not in self.proven:
            assert proof.threshold is not None
            self.proven[r.name] = await asyncio.to_thread(self._store, r, proof.threshold, "serve", proof.metrics(),
                                                          opts.auto_promote)
            log.warning("router %s: proven, version %d stored%s: %s", r.name, self.proven[r.name],
                        " and promoted" if opts.auto_promote else "", proof.reason)
        await self._proven(r, proof.reason, self.proven[r.name])
        return True

    async def _prove_learner(self, r: ScoringRouter[Any], share: float, serving: bool = False) -> bool:
        """Check the router's training procedure (holding `share` of alpha) by a cross-fit on the first pairs
        due at this look, counted from the start whatever model it observes with (lab.retrain.prove_learner);
        when proven, fit it on them and store the model as a serving version. Whether it is proven.

        `serving`: the router serves already; only a look not checked before can replace what it serves (with a
        model fitted on more pairs, its threshold calibrated on more: the same sequence of looks, so the same
        alpha), and a failed check leaves it serving (its re-check decides a demotion)."""
        from gearshift.lab.proof import look_at, looks_due
        from gearshift.lab.recalibrate import collect_pairs
        from gearshift.lab.retrain import prove_learner, refit
        from gearshift.routers.classifier import ClassifierRouter

        assert isinstance(r, ClassifierRouter)
        opts = r.proof
        pairs, _ = await asyncio.to_thread(collect_pairs, self.store, r, None)
        look = looks_due(len(pairs), opts.min_pairs, opts.look_growth)
        if look == 0:
            return False
        training = r.model.header.get("training") or {}
        if serving and str(training.get("outcomes", "")).startswith("traces") and \
                int(training.get("prompts") or 0) >= look_at(opts.min_pairs, opts.look_growth, look):
            return False  # what serves was fitted at this look: before a restart, or by another replica
        known = self.learner_checked.get(r.name)
        if known is None or known[0] != look:
            self.checks[r.name] = self.checks.get(r.name, 0) + 1
            if look_at(opts.min_pairs, opts.look_growth, look) < len(pairs):
                pairs, _ = await asyncio.to_thread(collect_pairs, self.store, r, None,
                                                   look_at(opts.min_pairs, opts.look_growth, look))
            proof = await asyncio.to_thread(prove_learner, r, pairs, opts, look, share)
            version = None
            if proof.ok:
                version = await asyncio.to_thread(refit, self.config, self.store, r, pairs, proof, opts.auto_promote,
                                                  now=self.clock())
                self.retrainings += 1
                log.warning("router %s: learner proven by cross-fit, refitted on %d pairs, version %d stored%s: %s",
                            r.name, len(pairs), version, " and promoted" if opts.auto_promote else "", proof.reason)
            known = self.learner_checked[r.name] = (look, f"learner (cross-fit) {proof.reason}", version)
        elif serving:  # this look was checked before: what serves is its answer
            return False
        _, reason, version = known
        if version is None:
            if not serving:
                r.state_reason = f"{r.state_reason}; {reason}" if r.state_reason else reason
            return False
        self.proven[r.name] = version
        await self._proven(r, reason, version)
        return True

    async def _proven(self, r: ScoringRouter[Any], reason: str, version: int) -> None:
        opts = r.proof
        r.state = "proven"
        r.state_reason = f"{reason}; version {version} " + (
            "promoted" if opts.auto_promote else f"waiting: `gearshift routers promote {r.name} {version}`")
        if opts.auto_promote:
            await self.poll()  # serve it now, not at the next poll

    @staticmethod
    def _refits(r: ScoringRouter[Any]) -> bool:
        """Whether the gateway can refit `r` on its pairs (a classifier without an encoder)."""
        from gearshift.routers.classifier import ClassifierRouter

        return isinstance(r, ClassifierRouter) and r.model.featurizer.encoder is None

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
        await self.demote(r, why, len(pairs))

    async def demote(self, r: ScoringRouter[Any], why: str, pairs: int) -> None:
        """Send a serving router back to observe (a version stored and promoted, so every replica follows)."""
        opts = r.proof
        metrics = {"recheck": why, "pairs": pairs, "floor": opts.floor, "confidence": opts.confidence}
        version = await asyncio.to_thread(self._store, r, r.threshold, "observe", metrics, True)
        self.demotions += 1
        set_mode(r, "observe")
        self.proven.pop(r.name, None)
        if r.name in self.learner_checked:  # the look that proved the demoted refit must not promote it again
            look = self.learner_checked[r.name][0]
            self.learner_checked[r.name] = (look, f"learner (cross-fit): its refit was demoted at check {look}", None)
        r.state, r.state_reason = "observing", f"demoted (version {version}): {why}"
        log.warning("router %s: DEMOTED to observe, serving safe model %s (version %d): %s", r.name, r.safe,
                    version, why)

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
