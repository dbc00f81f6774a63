"""gateway/versions.VersionLoop: which proof check is due, and on which pairs, comes from the store alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gearshift.gateway.versions import VersionLoop
from gearshift.lab.proof import look_at
from gearshift.plan import build_routers
from gearshift.routers.base import ScoringRouter
from tests.support.pairs import stored_pairs


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
