"""The PSI bound on recorded prompts: ordinary GSM8K traffic stays quiet, a shift to MMLU still alerts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gearshift.lab.train import requests_of
from gearshift.outcomes import datasets
from gearshift.outcomes.table import Outcomes
from gearshift.watch import Baseline, Histogram, Watch
from gearshift.watch.drift import DRIFT, psi, psi_bound, psi_noise
from tests.support.watch_helpers import cascade_trace, watch_config


def _tokens(o: Outcomes) -> np.ndarray:
    return np.array([r.estimated_tokens() for r in requests_of(o)])


def _psi_status(watch: Watch, base: np.ndarray, window: np.ndarray) -> tuple[str, float | None]:
    baseline = Baseline(n=len(base), prompt_tokens=Histogram.fit(base, bins=10))
    m = watch.check([cascade_trace(tokens=int(t), score=None) for t in window], baseline).metric("psi_prompt_tokens")
    return m.status, m.value


def test_small_windows_raise_the_psi_bound_to_the_noise() -> None:
    counts = [50] * 10
    assert psi_bound(0.25, counts, 500, 0.999) == 0.25  # large samples keep the configured bound
    small = psi_bound(0.25, counts, 100, 0.999)
    assert 0.3 < small < 0.5 and small > 3 * psi_noise(10, 500, 100)
    # The simulated quantile is what it claims: same-distribution draws pass it about 0.1% of the time.
    rng = np.random.default_rng(1)
    p = np.full(10, 0.1)
    same = [psi(rng.multinomial(500, p), rng.multinomial(100, p)) for _ in range(5000)]
    assert np.mean(np.array(same) > small) < 0.004


def test_ordinary_gsm8k_blocks_stay_quiet_and_mmlu_alerts(data_dir: Path) -> None:
    gsm8k = _tokens(datasets.load_gsm8k(data_dir))
    watch = Watch(watch_config(min_requests=100))
    rng = np.random.default_rng(7)
    alarms, above_fixed = 0, 0
    draws = 200
    for _ in range(draws):  # random disjoint blocks: a 500-trace baseline, a 100-trace window (min_requests)
        idx = rng.permutation(len(gsm8k))
        status, value = _psi_status(watch, gsm8k[idx[:500]], gsm8k[idx[500:600]])
        alarms += status == DRIFT
        above_fixed += value is not None and value > 0.25
    assert alarms <= draws // 100  # the stated rate is 0.1% per check; 1% leaves room for the data
    assert above_fixed > alarms  # what the fixed 0.25 did on the same draws
    mmlu = _tokens(datasets.load_mmlu(data_dir))
    status, value = _psi_status(watch, gsm8k[:500], mmlu[rng.permutation(len(mmlu))[:100]])
    assert status == DRIFT and value is not None and value > 0.5
