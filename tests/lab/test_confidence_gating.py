"""Confidence gates in the lab: a `<model>|logprob` outcomes column drives the logprob gate's sweep and the
replay of a configured cascade; gates the recorded outcomes cannot drive are refused with the reason."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gearshift.gates import build_gate
from gearshift.lab.gating import gate_scores, sweep_cascade
from gearshift.lab.replay import replay_cascade
from gearshift.outcomes.files import read_outcomes, write_outcomes
from gearshift.plan import build_routers
from tests.support.configs import parse_config

CSV = """prompt,cheap|quality,cheap|cost,cheap|response,cheap|logprob,strong|quality,strong|cost
q1,1,0.001,#### 1,-0.01,1,0.01
q2,0,0.001,#### 2,-1.2,1,0.01
q3,1,0.001,#### 3,-0.2,1,0.01
q4,0,0.001,#### 4,-0.9,0,0.01
q5,1,0.001,#### 5,,1,0.01
"""


@pytest.fixture
def outcomes_file(tmp_path: Path) -> Path:
    p = tmp_path / "o.csv"
    p.write_text(CSV)
    return p


def model(price: float, rank: int) -> dict[str, Any]:
    return {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "price": {"input": price, "output": price},
            "rank": rank}


def test_the_logprob_column_is_read_written_and_checked(outcomes_file: Path, tmp_path: Path) -> None:
    o = read_outcomes(outcomes_file)
    assert o.logprob is not None
    np.testing.assert_allclose(o.logprob[:4, 0], [-0.01, -1.2, -0.2, -0.9])
    assert np.isnan(o.logprob[4, 0]) and np.isnan(o.logprob[:, 1]).all()
    write_outcomes(o, tmp_path / "again.jsonl")
    again = read_outcomes(tmp_path / "again.jsonl")
    np.testing.assert_array_equal(np.isnan(again.logprob), np.isnan(o.logprob))  # type: ignore[arg-type]
    assert o.subset([0, 1]).logprob.shape == (2, 2)  # type: ignore[union-attr]
    (tmp_path / "bad.csv").write_text("prompt,m|quality,m|logprob\nq,1,0.5\n")
    with pytest.raises(ValueError, match=r"bad.csv row 1, column 'm\|logprob': '0.5' is not a mean token logprob"):
        read_outcomes(tmp_path / "bad.csv")


def test_the_column_drives_the_gate_and_its_threshold_sweep(outcomes_file: Path) -> None:
    o = read_outcomes(outcomes_file)
    gs = gate_scores([build_gate({"kind": "logprob", "threshold": 0.7})], o, "cheap")
    np.testing.assert_allclose(gs.scores[:4, 0], np.exp([-0.01, -1.2, -0.2, -0.9]))
    assert gs.passed[:, 0].tolist() == [True, False, True, False, False]  # no recorded logprob: escalate
    curve = sweep_cascade(gs.escalation_scores(), o, "cheap", "strong")
    # Escalating the two unconfident wrong answers first recovers the gap at 40% escalated.
    i = int(np.searchsorted(curve.strong_share, 0.4))
    assert curve.strong_share[i] == pytest.approx(0.4)
    assert curve.quality[i] == pytest.approx(0.8)


def test_a_configured_cascade_with_a_logprob_gate_replays(outcomes_file: Path, tmp_path: Path) -> None:
    cfg = parse_config({"models": {"cheap": model(1, 1), "strong": model(10, 9)},
                        "routers": {"c": {"kind": "cascade", "tiers": [
                            {"model": "cheap", "gates": [{"kind": "logprob", "threshold": math.exp(-0.5)}]},
                            {"model": "strong"}]}}}, base_dir=tmp_path)
    rep = replay_cascade(build_routers(cfg)["c"], read_outcomes(outcomes_file))
    assert rep.escalated.tolist() == [False, True, False, True, True]


def test_gates_the_outcomes_cannot_drive_are_refused(outcomes_file: Path, tmp_path: Path) -> None:
    o = read_outcomes(outcomes_file)
    with pytest.raises(ValueError, match=r"no `strong\|logprob` column"):
        gate_scores([build_gate("logprob")], o, "strong")
    no_column = tmp_path / "plain.csv"
    no_column.write_text("prompt,cheap|quality,cheap|response\nq,1,#### 1\n")
    with pytest.raises(ValueError, match=r"no `cheap\|logprob` column"):
        gate_scores([build_gate("logprob")], read_outcomes(no_column), "cheap")
