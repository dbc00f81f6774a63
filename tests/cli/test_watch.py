"""`gearshift watch` against a real SQLite store, and input shift on real prompts (GSM8K then MMLU)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gearshift.cli import main
from gearshift.store.sqlite import SQLiteStore
from gearshift.trace import Call, Trace
from gearshift.watch import Baseline, Watch, compute_stats
from tests.support.watch_helpers import batch, cascade_trace, watch_config


def _setup(tmp_path: Path, **watch: object) -> Path:
    """A config file whose store holds a calm first hour and then a drifted recent window."""
    config = watch_config(tmp_path, window_requests=100, **watch)
    data = config.model_dump(exclude={"base_dir"}, exclude_none=True)
    for m in data["models"].values():
        m.pop("name")
    path = tmp_path / "gearshift.yaml"
    path.write_text(yaml.safe_dump(data))
    store = SQLiteStore(tmp_path / "traces.db")
    now = time.time()
    old = batch(100, escalated_share=0.2)
    for i, t in enumerate(old):
        t.created = now - 7200 + i
    new = batch(100, escalated_share=0.6)
    for i, t in enumerate(new):
        t.created = now - 100 + i
    store.write(old + new)
    store.close()
    return path


def test_watch_json_flags_drift_against_the_oldest_traces(tmp_path: Path) -> None:
    path = _setup(tmp_path)
    r = CliRunner().invoke(main, ["watch", "--config", str(path), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["window"]["n"] == 100 and report["baseline"]["n"] == 100
    metrics = {m["name"]: m for m in report["metrics"]}
    assert metrics["escalation_rate"]["drifted"] and metrics["escalation_rate"]["value"] == pytest.approx(0.6)
    assert metrics["escalation_rate"]["baseline"] == pytest.approx(0.2)
    assert not metrics["psi_prompt_tokens"]["drifted"]
    assert any(a.startswith("escalation_rate 0.6 vs baseline 0.2") for a in report["alerts"])


def test_watch_table_exit_code_and_saved_baseline(tmp_path: Path) -> None:
    path = _setup(tmp_path)
    runner = CliRunner()
    r = runner.invoke(main, ["watch", "--config", str(path), "--exit-code"])
    assert r.exit_code == 1
    text = " ".join(r.output.split())  # rich wraps lines at the terminal width
    assert "escalation_rate" in text and "DRIFT" in text and "oldest 100 traces" in text
    # Save the recent window as the baseline: compared with itself, nothing drifts.
    out = tmp_path / "baseline.json"
    r = runner.invoke(main, ["watch", "--config", str(path), "--save-baseline", str(out)])
    assert r.exit_code == 0, r.output
    assert Baseline.load(out).escalation_rate == pytest.approx(0.6)
    r = runner.invoke(main, ["watch", "--config", str(path), "--baseline", str(out), "--exit-code"])
    assert r.exit_code == 0, r.output
    assert "no drift past the configured bounds" in r.output
    # A smaller window of the newest traces, and a router with no traces.
    r = runner.invoke(main, ["watch", "--config", str(path), "--window", "30", "--json"])
    assert json.loads(r.output)["window"]["n"] == 30
    r = runner.invoke(main, ["watch", "--config", str(path), "--router", "other"])
    assert r.exit_code != 0 and "no baseline" in r.output


def test_watch_baseline_file_from_config_and_bad_file(tmp_path: Path) -> None:
    path = _setup(tmp_path, baseline="missing.json")
    r = CliRunner().invoke(main, ["watch", "--config", str(path)])
    assert r.exit_code == 2 and "watch.baseline" in r.output and "missing.json" in r.output
    Baseline.from_traces(batch(100, escalated_share=0.6), watch_config()).save(tmp_path / "missing.json")
    r = CliRunner().invoke(main, ["watch", "--config", str(path), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["alerts"] == []


def _traces(prompts: list[str], router: str = "auto") -> list[Trace]:
    # As the gateway records them: estimated tokens are characters / 4.
    return [Trace(router=router, requested_model=router, final_model="weak", estimated_tokens=int(len(p) / 4),
                  calls=[Call(model="weak", role="primary")], prompt=p) for p in prompts]


def test_prompt_length_shift_gsm8k_to_mmlu(data_dir: Path) -> None:
    from gearshift.outcomes.datasets import load

    rng = random.Random(0)
    gsm8k = list(load("routellm/gsm8k").prompts)
    mmlu = list(load("routellm/mmlu").prompts)
    rng.shuffle(gsm8k)
    rng.shuffle(mmlu)
    baseline = Baseline.from_traces(_traces(gsm8k[:500]))
    watch = Watch(watch_config())
    same = watch.check(_traces(gsm8k[500:800]), baseline).metric("psi_prompt_tokens")
    shifted = watch.check(_traces(mmlu[:300]), baseline).metric("psi_prompt_tokens")
    assert same.status == "ok" and same.value is not None and same.value < 0.1
    assert shifted.status == "drift" and shifted.value is not None and shifted.value > 0.25
    # Through the JSON format, as the lab would hand it over.
    assert Baseline.from_json(baseline.to_json()).prompt_tokens == baseline.prompt_tokens


def test_store_round_trip_keeps_what_the_watch_reads(tmp_path: Path) -> None:
    # Traces read back from SQLite give the same figures as the Trace objects written.
    store = SQLiteStore(tmp_path / "t.db")
    store.write([cascade_trace(escalated=True, shadow=True)])
    (row,) = store.traces()
    assert [c["role"] for c in row["calls"]] == ["primary", "gate", "escalation", "shadow", "judge"]
    assert [v["gate"] for v in row["verdicts"]] == ["length", "shadow_agreement", "shadow_reference"]
    assert row["shadowed"] is True
    store.close()
    store = SQLiteStore(tmp_path / "u.db")
    traces = batch(60, escalated_share=0.3, agree_share=0.8) + [cascade_trace(status=502)]
    store.write(traces)
    rows = list(store.traces())
    store.close()
    config = watch_config()
    from_store, direct = compute_stats(rows, config), compute_stats(traces, config)
    for name in ("n", "gated", "escalated", "pairs", "agreements", "errors", "strong", "verdicts"):
        assert getattr(from_store, name) == getattr(direct, name), name
    assert from_store.spend_ratio == pytest.approx(direct.spend_ratio)
    assert from_store.shadow_spend_usd == pytest.approx(direct.shadow_spend_usd)
