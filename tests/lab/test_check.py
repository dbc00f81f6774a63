"""`gearshift lab check`: the five answers on real outcomes, on traces from a real gateway run, and by hand."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import yaml
from click.testing import CliRunner

from gearshift.cli import main
from gearshift.config import load_config
from gearshift.gateway.server import running
from gearshift.lab.baselines import LengthRouter
from gearshift.lab.calibrate import split_halves
from gearshift.lab.check import (
    MIN_VOLUME_TOKENS_PER_DAY,
    check_outcomes,
    check_traces,
    token_volume,
)
from gearshift.lab.replay import router_scores
from gearshift.outcomes import datasets
from gearshift.routers.random import RandomOptions, RandomRouter
from gearshift.store.sqlite import SQLiteStore
from gearshift.trace import Call, Trace

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "replay-gsm8k.yaml"
DAY = 86_400.0


def test_check_on_gsm8k_outcomes(data_dir) -> None:  # type: ignore[no-untyped-def]
    o = datasets.load("routellm/gsm8k")
    result = check_outcomes(o, floor=0.95, n_boot=200)
    by = {a.key: a for a in result.answers}
    assert [a.key for a in result.answers] == ["baseline", "shadow", "measurable", "volume", "savings"]
    base = by["baseline"]
    assert base.answer == "yes" and base.figures["graded"] == 1319
    assert base.figures["quality"].value == pytest.approx(o.quality[:, 1].mean())  # GPT-4: 85.7%
    assert base.figures["quality"].low < base.figures["quality"].value < base.figures["quality"].high
    assert by["shadow"].answer == "yes" and by["shadow"].figures["pairs"] == 1319
    assert by["measurable"].answer == "yes"
    assert by["volume"].answer == "unknown"  # benchmarks have no traffic
    sav = by["savings"]
    assert sav.answer in ("yes", "no")
    assert sav.figures["test_prompts"] + sav.figures["calibration_prompts"] == 1319
    assert set(sav.figures["candidates"]) == {"random", "length"}
    # The held-out figures are the chosen router's at its threshold on the other half, recomputed here.
    cal, test = split_halves(o, seed=0)
    router = {"random": RandomRouter("random", RandomOptions(weights={o.models[0]: 1.0, o.models[1]: 1.0})),
              "length": LengthRouter("length", o.models[0], o.models[1])}[sav.figures["router"]]
    strong = router_scores(router, test) >= sav.figures["threshold"]
    cost = np.where(strong, test.cost[:, 1], test.cost[:, 0]).mean()
    quality = np.where(strong, test.quality[:, 1], test.quality[:, 0]).mean()
    assert sav.figures["savings"].value == pytest.approx(1 - cost / test.cost[:, 1].mean())
    assert sav.figures["quality_retained"].value == pytest.approx(quality / test.quality[:, 1].mean())
    assert sav.figures["held"] == (quality / test.quality[:, 1].mean() >= 0.95)
    # The chosen router is the cheapest on the calibration half.
    cands = sav.figures["candidates"]
    assert cands[sav.figures["router"]]["calibration_cost"] == min(c["calibration_cost"] for c in cands.values())
    json.dumps(result.to_dict())  # plain JSON, NaN-free


def test_check_command_on_outcomes_as_json(data_dir) -> None:  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(main, ["lab", "check", "--outcomes", "routellm/gsm8k", "--floor", "0.9",
                                    "--n-boot", "100", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["floor"] == 0.9 and [a["answer"] for a in d["answers"]][:4] == ["yes", "yes", "yes", "unknown"]
    assert d["answers"][4]["figures"]["savings"]["low"] is not None
    assert d["recommendation"]
    table = CliRunner().invoke(main, ["lab", "check", "--outcomes", "routellm/gsm8k", "--n-boot", "50"])
    assert table.exit_code == 0 and "decision check: routellm/gsm8k" in table.output
    assert "unknown: volume" in table.output


# --- traces from a real gateway run ------------------------------------------------------------------


@pytest.fixture(scope="module")
def shadowed_gateway(tmp_path_factory, data_dir) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The GSM8K replay gateway, every cheap answer shadowed by GPT-4 and compared on its final answer."""
    tmp = tmp_path_factory.mktemp("gw")
    cfg = yaml.safe_load(EXAMPLE.read_text())
    for m in cfg["models"].values():
        m["replay"]["dataset"] = "routellm/gsm8k"
    cfg["routers"]["gearshift/auto"]["shadow"] = {"rate": 1.0, "compare": "final_answer"}
    cfg["store"] = {"url": "sqlite:///traces.db", "flush_interval": 0.05}
    (tmp / "gearshift.yaml").write_text(yaml.safe_dump(cfg))
    config = load_config(tmp / "gearshift.yaml")
    prompts = list(datasets.load("routellm/gsm8k").prompts[:400])
    with running(config) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)

        def ask(p: str) -> str:
            return client.chat.completions.with_raw_response.create(
                model="gearshift/auto", messages=[{"role": "user", "content": p}]).headers["x-gearshift-model"]

        with ThreadPoolExecutor(8) as pool:
            answered = list(pool.map(ask, prompts))
        deadline = time.monotonic() + 30
        while (gw.gateway.shadower.queue.qsize() or gw.gateway.writer.pending()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    store = SQLiteStore(tmp / "traces.db")
    return {"config": tmp / "gearshift.yaml", "store": store, "answered": answered}


def test_check_on_shadow_traces_of_a_real_gateway(shadowed_gateway) -> None:  # type: ignore[no-untyped-def]
    store = shadowed_gateway["store"]
    traces = list(store.traces())
    assert len(traces) == 400
    result = check_traces(traces, store.feedback(), reference="gpt-4-1106", n_boot=100)
    by = {a.key: a for a in result.answers}
    # Shadowing is skipped when GPT-4 already answered, so exactly the cheap answers are shadowed.
    cheap = sum(m == "mixtral-8x7b" for m in shadowed_gateway["answered"])
    shadowed = [t for t in traces if any(c["role"] == "shadow" for c in t["calls"])]
    assert by["shadow"].answer == "yes" and by["shadow"].figures["shadowed"] == len(shadowed) == cheap
    assert by["shadow"].figures["share"] == pytest.approx(cheap / 400)
    agreement = [t for t in traces if any(v.get("gate") == "shadow_agreement" for v in t["verdicts"])]
    assert by["measurable"].figures["shadow agreement"] == len(agreement) > 0
    assert by["measurable"].answer == ("yes" if len(agreement) >= 100 else "no")
    # GPT-4 is right by definition in a shadow pair: no independent baseline without gates or feedback.
    assert by["baseline"].answer == "no"
    assert by["volume"].answer == "unknown"  # seconds of traffic are not extrapolated to a day
    vol = by["volume"].figures
    assert vol["tokens"] == sum(c["input_tokens"] + c["output_tokens"] for t in traces for c in t["calls"]
                                if c["role"] in ("primary", "escalation", "fallback"))
    assert by["savings"].answer in ("yes", "no", "unknown")
    assert set(by["savings"].figures.get("candidates", {})) <= {"random", "length"}


def test_check_command_on_traces_with_feedback(shadowed_gateway) -> None:  # type: ignore[no-untyped-def]
    store = shadowed_gateway["store"]
    strong_ids = [t["id"] for t in store.traces() if t["final_model"] == "gpt-4-1106"][:40]
    for i, tid in enumerate(strong_ids):  # the application grades GPT-4's answers: 30 good, 10 bad
        store.write_feedback(tid, 1.0 if i < 30 else 0.0, source="test")
    res = CliRunner().invoke(main, ["lab", "check", "--config", str(shadowed_gateway["config"]), "--n-boot", "100",
                                    "--json"])
    assert res.exit_code == 0, res.output
    d = {a["key"]: a for a in json.loads(res.stdout)["answers"]}
    assert d["baseline"]["answer"] == "yes"
    assert d["baseline"]["figures"]["graded"] == 40
    assert d["baseline"]["figures"]["quality"]["value"] == pytest.approx(0.75)
    assert d["measurable"]["figures"]["feedback"] == 40
    # Candidates include the config's two-model random router.
    assert d["savings"]["answer"] in ("yes", "no", "unknown")
    assert {"random", "length", "gearshift/random"} == set(d["savings"]["figures"]["candidates"])


# --- volume and small data, by hand ---------------------------------------------------------------------


def _traces(n: int, span_days: float, tokens: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        t = Trace(router="r", requested_model="r", final_model="small", id=f"t{i}", prompt=f"p{i}",
                  created=1_700_000_000.0 + span_days * DAY * i / max(n - 1, 1),
                  calls=[Call(model="small", role="primary", input_tokens=tokens // 2, output_tokens=tokens // 2),
                         Call(model="judge", role="judge", input_tokens=1000, output_tokens=1000)])
        out.append(t)
    return out


def test_volume_is_tokens_of_client_calls_per_day(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    store.write(_traces(50, span_days=2.0, tokens=6000))  # 300,000 tokens over 2 days
    traces = list(store.traces())
    vol = token_volume(traces)
    assert vol["tokens"] == 300_000 and vol["tokens_all_roles"] == 400_000
    assert vol["tokens_per_day"] == pytest.approx(150_000)
    by = {a.key: a for a in check_traces(traces, n_boot=20).answers}
    assert by["volume"].answer == "yes" and "150,000 tokens/day" in by["volume"].evidence
    low = SQLiteStore(tmp_path / "low.db")
    low.write(_traces(50, span_days=4.0, tokens=6000))  # 75,000 a day
    by = {a.key: a for a in check_traces(list(low.traces()), n_boot=20).answers}
    assert by["volume"].answer == "no" and by["volume"].figures["tokens_per_day"] < MIN_VOLUME_TOKENS_PER_DAY
    # No pairs, no verdicts: nothing to calibrate, nothing measured.
    assert by["shadow"].answer == "no" and by["measurable"].answer == "no" and by["savings"].answer == "unknown"


def test_too_few_pairs_cannot_show_savings(data_dir) -> None:  # type: ignore[no-untyped-def]
    o = datasets.load("routellm/gsm8k").subset(np.arange(60))
    by = {a.key: a for a in check_outcomes(o, n_boot=50).answers}
    assert by["savings"].answer == "unknown" and "at least 100" in by["savings"].evidence


def test_check_says_when_agreement_is_only_a_lower_bound(data_dir) -> None:  # type: ignore[no-untyped-def]
    from tests.support.pairs import gsm8k_pair_traces

    rows, _ = gsm8k_pair_traces(resolve_rate=0.0)
    by = {a.key: a for a in check_traces(rows, reference="strong", n_boot=50).answers}
    assert by["shadow"].figures["lower_bound"] and "a lower bound (526 disagreements" in by["shadow"].evidence
    assert "Retained is a lower bound" in by["savings"].evidence
    rows, _ = gsm8k_pair_traces(resolve_rate=0.2)
    by = {a.key: a for a in check_traces(rows, reference="strong", n_boot=50).answers}
    assert not by["shadow"].figures["lower_bound"] and "disagreements resolved" in by["shadow"].evidence
    assert "lower bound" not in by["savings"].evidence.replace("lower bound of retained", "")
