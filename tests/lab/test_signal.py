"""No signal: APGR's interval on held-out pairs against random (0.5), and no automatic promotion without it.

Shuffled labels: GSM8K outcomes whose quality rows are permuted across prompts with a fixed seed, so
nothing in a prompt's text can predict how the models did on it: no router can have signal there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gearshift.cli import main
from gearshift.lab.bootstrap import Estimate
from gearshift.lab.recalibrate import recalibrate
from gearshift.lab.retrain import retrain
from gearshift.lab.signal import STOP_AFTER, Signal, random_p_value, signal
from gearshift.lab.train import TrainSettings, fit
from gearshift.learned import artifact
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W
from gearshift.outcomes.files import write_outcomes
from tests.support.pairs import gsm8k, shuffled, stored_pairs

NO_SIGNAL = "no signal: APGR"
SHOULD_NOT = "this router should not serve this traffic"


def test_the_line_says_when_the_interval_includes_random() -> None:
    none = Signal(Estimate(0.51, 0.44, 0.58), 300)
    assert not none.has_signal
    assert none.line() == ("no signal: APGR 0.51 [0.44, 0.58] on 300 held-out pairs includes random (0.5); "
                           "this router should not serve this traffic")
    some = Signal(Estimate(0.62, 0.55, 0.69), 300)
    assert some.has_signal and some.line() == "" and "(random 0.5)" in some.figures()
    assert not Signal(Estimate(float("nan"), float("nan"), float("nan")), 0).has_signal
    assert Signal.from_json(some.to_json()) == Signal(Estimate(0.62, 0.55, 0.69), 300)


def test_oracle_scores_have_signal_and_shuffled_ones_do_not(data_dir: Path) -> None:
    o = gsm8k(400)
    gain = np.asarray(o.quality[:, 1] - o.quality[:, 0], float)
    assert signal(gain, o, W, S, n_boot=100).has_signal
    assert not signal(gain, shuffled(o), W, S, n_boot=100).has_signal


def test_lab_train_says_no_signal_on_shuffled_labels_and_not_on_real_ones(tmp_path: Path, data_dir: Path) -> None:
    runner = CliRunner()
    write_outcomes(shuffled(gsm8k(400)), tmp_path / "shuffled.csv")
    res = runner.invoke(main, ["lab", "train", "--outcomes", str(tmp_path / "shuffled.csv"), "--holdout", "0.5",
                               "--weak", W, "--strong", S, "--out", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    assert "(random 0.5)" in res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith(NO_SIGNAL)]
    assert len(lines) == 1 and "on 200 held-out pairs includes random (0.5)" in lines[0] and SHOULD_NOT in lines[0]
    assert artifact.load(tmp_path / "s.json").header["metrics"]["signal"]["has_signal"] is False

    res = runner.invoke(main, ["lab", "train", "--outcomes", "routellm/gsm8k", "--drop-contaminated", "--sample",
                               "1200", "--holdout", "0.5", "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    m = artifact.load(tmp_path / "r.json").header["metrics"]
    assert m["signal"]["has_signal"] is True and m["signal"]["low"] > 0.5
    assert f"APGR {m['apgr']['value']:.3f} [{m['apgr']['low']:.3f}, {m['apgr']['high']:.3f}] (random 0.5)" in res.output
    assert "no signal" not in res.output


CONFIG = f"""\
models:
  mixtral:
    provider: replay
    replay: {{dataset: routellm/gsm8k, column: {W}}}
    price: {{input: 0.6, output: 0.6}}
    rank: 1
  gpt-4:
    provider: replay
    replay: {{dataset: routellm/gsm8k, column: {S}}}
    price: {{input: 10, output: 30}}
    rank: 10
routers:
  smart:
    kind: classifier
    artifact: router.json
server: {{open: true}}
"""


def test_lab_calibrate_says_no_signal_on_shuffled_labels(tmp_path: Path, data_dir: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    o = gsm8k(1200, seed=1)
    artifact.save(fit(o.subset(np.arange(600)), TrainSettings()), tmp_path / "router.json")
    write_outcomes(o.subset(np.arange(600, 1200)), tmp_path / "real.csv")
    write_outcomes(shuffled(o.subset(np.arange(600, 1200))), tmp_path / "shuffled.csv")
    cfg = tmp_path / "gearshift.yaml"
    cfg.write_text(CONFIG)
    runner = CliRunner()
    args = ["lab", "calibrate", "--config", str(cfg), "--router", "smart", "--floor", "0.9", "--dry-run", "--outcomes"]
    res = runner.invoke(main, [*args, str(tmp_path / "shuffled.csv")])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith(NO_SIGNAL)]
    assert len(lines) == 1 and "on 300 held-out pairs" in lines[0] and SHOULD_NOT in lines[0]
    res = runner.invoke(main, [*args, str(tmp_path / "real.csv")])
    assert res.exit_code == 0, res.output
    assert "smart: APGR " in res.output and "on 300 held-out pairs (random 0.5)" in res.output
    assert "no signal" not in res.output
    # The config serves the artifact's own threshold: loading it says it was never calibrated on this traffic.
    caplog.clear()
    res = runner.invoke(main, ["check-config", str(cfg)])
    assert res.exit_code == 0, res.output
    warned = [r.getMessage() for r in caplog.records if "never calibrated on this traffic" in r.getMessage()]
    assert warned and "router smart" in warned[0] and "gearshift lab calibrate" in warned[0]
    assert "gearshift lab recalibrate" in warned[0]


@pytest.fixture
def shuffled_store(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Shuffled labels, and a router that routes everything strong (threshold 0)."""
    monkeypatch.setenv("GEARSHIFT_DATA", str(data_dir))
    path, config, store = stored_pairs(tmp_path, "shuffled", 0.0)
    yield path, config, store
    store.close()


def test_recalibrate_and_retrain_refuse_to_promote_without_signal(shuffled_store) -> None:  # type: ignore[no-untyped-def]
    path, config, store = shuffled_store
    r = recalibrate(config, store, "gearshift/smart", floor=0.9, min_pairs=100, apply=True)
    assert r.signal is not None and not r.signal.has_signal and r.signal.pairs == 400
    # From all-strong (threshold 0) to fewer strong calls: not applied without signal.
    assert r.calibration.threshold > 0.0 and not r.promoted
    assert r.refused is not None and r.refused.startswith("not promoted: no signal: APGR")
    assert store.active_version("gearshift/smart") is None
    assert store.router_versions("gearshift/smart")[0]["metrics"]["signal"]["has_signal"] is False

    t = retrain(config, store, "gearshift/smart", floor=0.9, min_pairs=100, apply=True)
    assert t.signal is not None and not t.signal.has_signal and t.signal.pairs == t.check_pairs == 120
    assert not t.promoted and t.refused is not None and SHOULD_NOT in t.refused
    assert store.active_version("gearshift/smart") is None


def test_cli_recalibrate_and_retrain_say_no_signal(shuffled_store) -> None:  # type: ignore[no-untyped-def]
    path, _, _ = shuffled_store
    runner = CliRunner()
    for cmd in ("recalibrate", "retrain"):
        res = runner.invoke(main, ["lab", cmd, "--config", str(path), "--router", "gearshift/smart", "--floor", "0.9",
                                   "--min-pairs", "100", "--apply"])
        assert res.exit_code == 0, res.output
        lines = [ln for ln in res.output.splitlines() if NO_SIGNAL in ln]
        assert len(lines) == 1 and lines[0].startswith("not promoted: no signal: APGR"), res.output
        assert "(random 0.5" in res.output and "not applied" in res.output and "\npromoted" not in res.output


def test_without_signal_a_move_toward_the_strong_model_still_applies(tmp_path: Path, data_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEARSHIFT_DATA", str(data_dir))
    path, config, store = stored_pairs(tmp_path, "shuffled", 1.01)  # all weak: below the floor
    try:
        r = recalibrate(config, store, "gearshift/smart", floor=0.9, min_pairs=100, apply=True)
        assert r.signal is not None and not r.signal.has_signal
        # More strong calls only adds safety: applied, and the line still says there is no signal.
        assert r.calibration.threshold < 1.01 and r.promoted and r.refused is None
        assert store.active_version("gearshift/smart") is not None
    finally:
        store.close()
    res = CliRunner().invoke(main, ["lab", "recalibrate", "--config", str(path), "--router", "gearshift/smart",
                                    "--floor", "0.9", "--min-pairs", "100"])
    assert res.exit_code == 0, res.output
    assert [ln for ln in res.output.splitlines() if ln.startswith(NO_SIGNAL)]


def test_on_real_pairs_recalibrate_and_retrain_show_the_interval_and_promote(tmp_path: Path, data_dir: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEARSHIFT_DATA", str(data_dir))
    path, config, store = stored_pairs(tmp_path, "real", 0.0)
    try:
        r = recalibrate(config, store, "gearshift/smart", floor=0.9, min_pairs=100, apply=True)
        assert r.signal is not None and r.signal.has_signal and r.promoted and r.refused is None
    finally:
        store.close()
    res = CliRunner().invoke(main, ["lab", "recalibrate", "--config", str(path), "--router", "gearshift/smart",
                                    "--floor", "0.9", "--min-pairs", "100"])
    assert res.exit_code == 0, res.output
    assert "on 400 held-out pairs (random 0.5)" in res.output and "no signal" not in res.output


def test_scheduled_recalibration_with_auto_apply_refuses_without_signal(tmp_path: Path, data_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from gearshift.gateway.versions import VersionLoop
    from gearshift.plan import build_routers

    monkeypatch.setenv("GEARSHIFT_DATA", str(data_dir))
    _, config, store = stored_pairs(tmp_path, "shuffled", 0.0, recalibrate={
        "floor": 0.9, "every_hours": 1, "min_pairs": 100, "auto_apply": True})
    try:
        loop = VersionLoop(config, build_routers(config), store)
        loop.last_run["gearshift/smart"] = 0.0  # due now
        asyncio.run(loop._scheduled())
        assert loop.recalibrations == 1 and len(store.router_versions("gearshift/smart")) == 1
        assert store.active_version("gearshift/smart") is None
        refused = [r.getMessage() for r in caplog.records if "not promoted: no signal" in r.getMessage()]
        assert len(refused) == 1 and "router gearshift/smart version 1" in refused[0]
    finally:
        store.close()


def test_the_permutation_test_reads_apgr_off_the_ranks_and_is_exact_under_the_null(data_dir: Path) -> None:
    from scipy.stats import rankdata

    from gearshift.lab import metrics
    from gearshift.lab.replay import sweep_scores

    o = gsm8k(300)
    gain = o.quality[:, o.index(S)] - o.quality[:, o.index(W)]
    scores = np.round(np.random.default_rng(0).random(300), 1)  # many ties: they share their weight
    weight = 300 - rankdata(-scores) + 0.5
    assert gain @ weight / (300 * gain.sum()) == pytest.approx(metrics.apgr(sweep_scores(scores, o, W, S)))
    assert random_p_value(gain, o, W, S, n_perm=2000) == pytest.approx(1 / 2001)  # the oracle: none reaches it
    # Scores unrelated to the outcomes: p-values spread over (0, 1], not piled near 0.
    ps = [random_p_value(np.random.default_rng(s).random(300), o, W, S, n_perm=500, seed=s) for s in range(20)]
    assert sum(p <= 0.05 for p in ps) <= 3 and max(ps) > 0.5


def test_the_permutation_test_stops_early_when_the_ranking_has_no_signal(data_dir: Path) -> None:
    o = gsm8k(300)
    p = random_p_value(np.random.default_rng(1).random(300), o, W, S, n_perm=10_000, seed=1)
    drawn = STOP_AFTER / p  # the sequential p-value: STOP_AFTER over the permutations it drew
    assert p > 0.05 and drawn == pytest.approx(round(drawn)) and drawn < 1_000


def test_the_stratified_test_ranks_each_group_within_itself_and_permutes_within_it(data_dir: Path) -> None:
    """Scores from one model per fold (a cross-fit's), each on a scale of its own: only ranks within a fold count."""
    o = gsm8k(200)
    gain = o.quality[:, o.index(S)] - o.quality[:, o.index(W)]
    groups = np.arange(200) % 2
    scores = gain + np.random.default_rng(1).normal(0, 2.0, 200)
    shifted = scores - 100.0 * groups  # fold 1's model on another scale: every score below fold 0's
    p = random_p_value(scores, o, W, S, n_perm=2000, seed=2, groups=groups)
    assert p < 0.01 and random_p_value(shifted, o, W, S, n_perm=2000, seed=2, groups=groups) == p
    assert random_p_value(shifted, o, W, S, n_perm=2000, seed=2) != p  # pooled ranks read the scales
    one = np.zeros(200, int)  # a single group is the plain test
    assert random_p_value(scores, o, W, S, n_perm=500, seed=3, groups=one) == random_p_value(scores, o, W, S,
                                                                                              n_perm=500, seed=3)
    ps = [random_p_value(np.random.default_rng(s).random(200), o, W, S, n_perm=500, seed=s, groups=groups)
          for s in range(10)]
    assert sum(p <= 0.05 for p in ps) <= 2 and max(ps) > 0.5
