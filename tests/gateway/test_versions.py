"""gateway/versions.VersionLoop: which proof check is due, and on which pairs, comes from the store alone; with
`retrain`, a learner proven by cross-fit is refitted and serves (one without signal: tests/sim/test_run.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from gearshift.gateway.versions import VersionLoop
from gearshift.lab.proof import LEARNER_SHARE, look_at, look_confidence
from gearshift.learned import artifact
from gearshift.plan import build_routers
from gearshift.routers.base import ScoringRouter
from gearshift.routers.classifier import ClassifierRouter
from gearshift.store.base import TraceStore
from tests.support.pairs import gsm8k, gsm8k_outcomes, pair_trace, stored_pairs


def test_a_restarted_loop_makes_the_same_check_on_the_same_pairs(tmp_path: Path, data_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEARSHIFT_DATA", str(data_dir))
    _, config, store = stored_pairs(tmp_path, "real", 0.5, mode="observe",
                                    proof={"min_pairs": 100, "floor": 0.9, "every_hours": 1})
    try:
        reasons = []
        for _ in range(2):  # a gateway, then the same gateway restarted: nothing is carried over but the store
            loop = VersionLoop(config, build_routers(config), store)
            router = loop.routers["gearshift/smart"]
            assert isinstance(router, ScoringRouter)
            asyncio.run(loop.check(router))
            asyncio.run(loop.check(router))  # the same look again in one process: answered from its cache
            assert loop.checks == {"gearshift/smart": 1} and router.pairs == 400
            reasons.append(router.state_reason.split("; next check")[0])
        # 400 pairs: checks on the first 100, 150, 225 and 338; the 4th is due, on the first 338 pairs.
        assert look_at(100, 1.5, 4) == 338 and look_at(100, 1.5, 5) > 400
        assert reasons[0] == reasons[1] and "against random" in reasons[0]
        if router.state == "proven":
            assert "check 4: 95% over every check" in reasons[0] and "on 338 pairs" in reasons[0]
    finally:
        store.close()


def _observing(tmp_path: Path, labels: str, **proof: object) -> tuple[VersionLoop, ClassifierRouter, TraceStore]:
    _, config, store = stored_pairs(tmp_path, labels, 0.5, mode="observe",
                                    proof={"min_pairs": 400, "floor": 0.9, "every_hours": 1, "retrain": True, **proof})
    loop = VersionLoop(config, build_routers(config), store)
    router = loop.routers["gearshift/smart"]
    assert isinstance(router, ClassifierRouter)
    return loop, router, store


def test_a_learner_proven_by_cross_fit_is_refitted_and_serves_with_the_out_of_fold_threshold(
        tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The configured model was trained on shuffled qualities (no signal); the 400 live pairs have signal: the
    learner's chained 5-fold cross-fit proves it, and the model fitted on all 400 is stored serving and promoted."""
    monkeypatch.setenv("GEARSHIFT_DATA", str(data_dir))
    loop, router, store = _observing(tmp_path, "prior-shuffled", auto_promote=True)
    try:
        asyncio.run(loop.check(router))
        assert loop.retrainings == 1 and loop.checks == {"gearshift/smart": 2}  # its own check, then the learner's
        assert router.mode == "serve" and router.artifact != router.configured_artifact, router.state_reason
        assert router.state == "serving"
        active = store.active_version("gearshift/smart")
        assert active is not None
        settings, proof = active["settings"], active["metrics"]["proof"]
        assert settings["mode"] == "serve" and settings["artifact"] == router.artifact
        assert router.threshold == settings["threshold"] == proof["threshold"]
        stored = artifact.load(tmp_path / settings["artifact"])
        assert stored.header["threshold"] == settings["threshold"] and stored.header["training"]["prompts"] == 400
        # The first check of the learner holds half of alpha (lab.proof.LEARNER_SHARE).
        assert proof["cross_fit"] and proof["reason"].startswith("proven") and proof["signal_confidence"] == pytest.approx(look_confidence(0.99, 1, 0.5))
        # Tested on the 4 folds of 80 scored by models fitted on the folds before them (the first only trains).
        assert proof["p_value"] <= 1 - proof["signal_confidence"] and proof["pairs"] == 320
        # Demoted (its re-check failed), it observes; the learner's check at the same look (the same pairs) does
        # not promote it again.
        asyncio.run(loop.demote(router, "quality retained below the floor", 200))
        assert not asyncio.run(loop._prove_learner(router, LEARNER_SHARE))
        assert router.mode == "observe" and router.state != "proven" and loop.retrainings == 1, router.state_reason
        assert "refit was demoted at check 1" in router.state_reason and "gearshift/smart" not in loop.proven
        assert store.active_version("gearshift/smart")["settings"]["mode"] == "observe"  # type: ignore[index]
    finally:
        store.close()


def test_a_serving_learner_is_refitted_at_its_next_look_on_every_pair_so_far(
        tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Promoted at its first look (400 pairs), the learner keeps its sequence of looks while it serves: at the
    second (600 pairs) it is proven again, and the model fitted on all 600, with a threshold calibrated on them,
    replaces the one serving; that look does not refit it twice."""
    monkeypatch.setenv("GEARSHIFT_DATA", str(data_dir))
    loop, router, store = _observing(tmp_path, "prior-shuffled", auto_promote=True)
    try:
        asyncio.run(loop.check(router))
        first = router.artifact
        assert router.mode == "serve" and loop.retrainings == 1, router.state_reason
        everything, seen = gsm8k_outcomes(), set(gsm8k(1000, seed=2).prompts)  # 200 prompts it has not seen
        more = [(str(p), q) for p, q in zip(everything.prompts, np.asarray(everything.quality), strict=True)
                if p not in seen][:210]
        store.write([pair_trace("gearshift/smart", p, float(q[0]), float(q[1])) for p, q in more[:200]])
        asyncio.run(loop.check(router))
        assert loop.retrainings == 2 and router.mode == "serve" and router.artifact != first, router.state_reason
        active = store.active_version("gearshift/smart")
        assert active is not None and active["settings"]["artifact"] == router.artifact
        proof = active["metrics"]["proof"]
        assert proof["signal_confidence"] == pytest.approx(look_confidence(0.99, 2, LEARNER_SHARE))
        assert artifact.load(tmp_path / router.artifact).header["training"]["prompts"] == 600
        assert router.threshold == active["settings"]["threshold"] == proof["threshold"]
        assert router.state == "serving" and f"version {active['version']} promoted" in router.state_reason
        asyncio.run(loop.check(router))  # the same look again: answered, nothing refitted
        assert loop.retrainings == 2 and store.active_version("gearshift/smart")["version"] == active["version"]  # type: ignore[index]
        # Restarted (nothing carried over but the store), the gateway serves the refit and, with new pairs short of
        # the next look, does not make it again.
        again = VersionLoop(loop.config, build_routers(loop.config), store)
        served = again.routers["gearshift/smart"]
        assert isinstance(served, ClassifierRouter)
        asyncio.run(again.poll())
        store.write([pair_trace("gearshift/smart", p, float(q[0]), float(q[1])) for p, q in more[200:]])
        asyncio.run(again.check(served))
        assert served.mode == "serve" and served.artifact == router.artifact and again.retrainings == 0
        assert store.active_version("gearshift/smart")["version"] == active["version"]  # type: ignore[index]
    finally:
        store.close()
