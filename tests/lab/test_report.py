"""`gearshift lab report`: the figures on hand-made curves and real data, the self-contained HTML, the PNGs."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from gearshift.cli import main
from gearshift.lab import metrics
from gearshift.lab.baselines import LengthRouter
from gearshift.lab.evaluate import default_pair
from gearshift.lab.replay import router_scores
from gearshift.lab.report import (
    CascadeRecords,
    build_report,
    cascade_records_from_traces,
    cheapest_reaching,
    summarise_cascade,
    write_report,
)
from gearshift.outcomes import datasets
from gearshift.plan import build_routers
from gearshift.route import Route
from gearshift.routers.base import Router
from gearshift.store.sqlite import SQLiteStore
from gearshift.trace import Call, Trace
from tests.support.configs import load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "replay-gsm8k.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# --- cheapest_reaching on hand-made curves -------------------------------------------------------


def test_cheapest_reaching_interpolates_on_the_crossing_segment() -> None:
    share, quality, cost = [0.0, 0.5, 1.0], [0.6, 0.8, 0.9], [1.0, 5.0, 10.0]
    c, s = cheapest_reaching(share, quality, cost, 0.7)  # halfway up the first segment
    assert (c, s) == pytest.approx((3.0, 0.25))
    c, s = cheapest_reaching(share, quality, cost, np.array([0.6, 0.85, 0.9, 0.95]))
    assert c[:3] == pytest.approx([1.0, 7.5, 10.0])
    assert s[:3] == pytest.approx([0.0, 0.75, 1.0])
    assert np.isnan(c[3]) and np.isnan(s[3])  # never reached


def test_cheapest_reaching_when_quality_falls_and_when_cost_falls() -> None:
    # Quality peaks mid-curve: the first crossing, 5/6 of the way along the first segment.
    c, _ = cheapest_reaching([0, 0.5, 1], [0.6, 0.9, 0.8], [1, 5, 10], 0.85)
    assert c == pytest.approx(1 + 4 * (0.25 / 0.3))
    # Cost falls on the first segment: its far end is both good enough and cheapest.
    c, s = cheapest_reaching([0, 0.5, 1], [0.6, 0.8, 0.9], [5, 1, 10], 0.7)
    assert (c, s) == pytest.approx((1.0, 0.5))
    # A single point either reaches the target or not.
    assert cheapest_reaching([1.0], [0.9], [3.0], 0.8)[0] == pytest.approx(3.0)
    assert np.isnan(cheapest_reaching([1.0], [0.7], [3.0], 0.8)[0])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=7), st.integers(0, 20),
       st.booleans())
def test_cheapest_reaching_matches_a_dense_search(points, target, sort_cost) -> None:
    q = np.array([p[0] for p in points], float) / 20
    c = np.array([p[1] for p in points], float)
    if sort_cost:
        c = np.sort(c)  # the fast path (cost never falls along the curve)
    s = np.linspace(0, 1, len(q))
    t = target / 20
    got, _ = cheapest_reaching(s, q, c, t)
    # Dense search over every segment.
    u = np.linspace(0, 1, 2001)
    if len(q) == 1:
        dq, dc = q, c
    else:
        dq = (q[:-1, None] + u * (q[1:] - q[:-1])[:, None]).ravel()
        dc = (c[:-1, None] + u * (c[1:] - c[:-1])[:, None]).ravel()
    ok = dq >= t - 1e-12
    if not ok.any():
        assert np.isnan(got)
    else:
        assert got == pytest.approx(dc[ok].min(), abs=0.02)


# --- the report on real data -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gsm8k_report(tmp_path_factory, data_dir):  # type: ignore[no-untyped-def]
    o = datasets.load("routellm/gsm8k")
    weak, strong = default_pair(o)
    config = load_config(EXAMPLE)
    columns = {m: mc.replay.column for m, mc in config.models.items() if mc.replay is not None}
    routers = [LengthRouter("length", weak, strong), build_routers(config)["gearshift/auto"]]
    report = build_report(o, weak, strong, routers, columns=columns, n_boot=200)
    out = tmp_path_factory.mktemp("report") / "gsm8k.html"
    return o, report, write_report(report, out, command="gearshift lab report --outcomes routellm/gsm8k")


def test_report_html_is_one_self_contained_file_with_tables_and_images(gsm8k_report) -> None:  # type: ignore[no-untyped-def]
    _, report, paths = gsm8k_report
    html_path, pngs = paths[0], paths[1:]
    text = html_path.read_text(encoding="utf-8")
    # Nothing is fetched: every src is an embedded image and there are no links or scripts.
    srcs = re.findall(r'\bsrc="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "href=" not in text and "<script" not in text and "<link" not in text and "url(" not in text
    assert len(srcs) == 3 == len(pngs)
    # The PNGs beside it are the embedded images.
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in srcs}
    for p in pngs:
        assert p.exists() and p.name.startswith("gsm8k-") and p.suffix == ".png"
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and data in embedded
    # The tables: the summary's columns, one row per router, and the savings at each level.
    for head in ("$ per 1k requests", "savings vs always-strongest", "quality retained", "strong calls", "APGR",
                 "CPT(50%)", "CPT(80%)", "keep 90%", "keep 95%", "keep 99%"):
        assert f"<th>{head}</th>" in text.replace("&#x27;", "'")
    for router in ("always weak (mistralai/Mixtral-8x7B-Instruct-v0.1)", "always strong (gpt-4-1106-preview)",
                   "random", "oracle", "length", "gearshift/auto", "single-model hull"):
        assert f"<td>{router}</td>" in text
    assert "costs are estimates" in text  # RouteLLM costs are estimated from characters
    assert report.n == 1319 and report.n_dropped == 0
    # Random is its expectation with the band of its draws, in the table, the PGR band and the levels.
    assert "<td>random (expected; 5-95% of 200 draws)</td>" in text
    rnd = report.row("random")
    assert rnd.band is not None and report.bands["random"].low is rnd.band.pgr_low
    assert report.ratios["random"]["savings"] == rnd.band.savings
    at95 = next(x for x in report.level_results if x.router == "random" and x.level == 0.95)
    assert at95.savings == rnd.band.levels[0.95][0]  # type: ignore[index]


def test_report_figures_agree_with_the_lab_metrics(gsm8k_report) -> None:  # type: ignore[no-untyped-def]
    o, report, _ = gsm8k_report
    w, s = o.index(report.weak), o.index(report.strong)
    qw, qs = o.quality[:, w].mean(), o.quality[:, s].mean()
    cw, cs = o.cost[:, w].mean(), o.cost[:, s].mean()
    strong_row = report.row(f"always {report.strong}")
    assert strong_row.quality.value == pytest.approx(qs) and strong_row.cost.value == pytest.approx(cs)
    assert report.ratios[f"always {report.weak}"]["savings"].value == pytest.approx(1 - cw / cs)
    assert report.ratios[f"always {report.weak}"]["quality_retained"].value == pytest.approx(qw / qs)
    # Two models: the hull is the straight mix of the two, so its savings at level L is closed-form.
    for lr in (x for x in report.level_results if x.router == "single-model hull"):
        mix = (lr.level * qs - qw) / (qs - qw)
        assert lr.savings is not None
        assert lr.savings.value == pytest.approx(1 - (cw + mix * (cs - cw)) / cs)
        assert lr.savings.low <= lr.savings.value <= lr.savings.high
    # A swept router's level figure is the cheapest point of its own curve reaching the level.
    length = report.row("length")
    assert length.curve is not None and length.apgr is not None
    for lr in (x for x in report.level_results if x.router == "length"):
        q, c = length.curve.quality, length.curve.cost
        target = lr.level * q[-1]
        i = int(np.argmax(q >= target))  # the first point reaching the level; cost rises along the curve
        frac = (target - q[i - 1]) / (q[i] - q[i - 1])
        assert lr.savings is not None
        assert lr.savings.value == pytest.approx(1 - (c[i - 1] + frac * (c[i] - c[i - 1])) / c[-1])
    # The oracle saves the most at every level; random's APGR is near one half.
    for lv in report.levels:
        by = {x.router: x for x in report.level_results if x.level == lv and x.savings is not None}
        assert by["oracle"].savings.value == max(x.savings.value for x in by.values())  # type: ignore[union-attr]
    rnd = report.row("random")
    assert rnd.apgr is not None and 0.4 < rnd.apgr.value < 0.6
    # The rules router of the example is one operating point, below 90% of always-strong quality.
    auto = report.row("gearshift/auto")
    assert auto.curve is None and auto.kind == "replay"
    assert not any(x.savings for x in report.level_results if x.router == "gearshift/auto")
    # Without a threshold of its own, the length baseline sends prompts at or above the median length strong.
    scores = router_scores(LengthRouter("length", report.weak, report.strong), o)
    assert report.row("length").strong_share.value == pytest.approx(np.mean(scores >= np.median(scores)))


def test_report_on_routerbench_shows_every_model_and_aiq(tmp_path: Path, data_dir) -> None:  # type: ignore[no-untyped-def]
    o = datasets.load("routerbench/mbpp")
    report = build_report(o, n_boot=50)
    assert report.multi_model and len(report.models) == 11
    pair = [o.index(report.weak), o.index(report.strong)]
    used = o.subset(~np.isnan(o.quality[:, pair]).any(axis=1))
    mc, mq = metrics.model_points(used)
    lo, hi = float(mc.min()), float(mc.max())
    assert report.aiq["single-model hull (zero router)"] == pytest.approx(metrics.aiq(mc, mq, (lo, hi)))
    assert report.aiq_range == pytest.approx((lo, hi))
    assert report.oracle_point is not None
    assert report.oracle_point[1] == pytest.approx(np.nanmean(metrics.oracle_decisions(used).quality))
    # The oracle is mixed with the single models like any one-point router: it ranks above all of them.
    oracle = report.aiq[f"oracle (all {len(o.models)} models)"]
    assert oracle > report.aiq["single-model hull (zero router)"]
    assert oracle == max(report.aiq.values())
    html_path = write_report(report, tmp_path / "mbpp.html")[0]
    text = html_path.read_text(encoding="utf-8")
    assert "All models (RouterBench)" in text and "<th>AIQ</th>" in text
    for m in o.models:
        assert f"<td>{m}</td>" in text


# --- cascades --------------------------------------------------------------------------------------------


def _trace(i: int, *, escalate: bool = False, gate: bool = True, shadow: bool = False, latency_ms: float = 100.0,
           created: float = 1_700_000_000.0) -> Trace:
    calls = [Call(model="small", role="primary", cost_usd=0.001, latency_ms=latency_ms / 2, input_tokens=10,
                  output_tokens=5)]
    verdicts = []
    if gate:
        calls.append(Call(model="judge", role="judge", cost_usd=0.0005))
        verdicts.append({"gate": "judge", "model": "small", "passed": not escalate, "score": 0.0 if escalate else 1.0})
    if escalate:
        calls.append(Call(model="large", role="escalation", cost_usd=0.01, input_tokens=10, output_tokens=5))
    if shadow:  # shadow work after the answer: not part of the request's spend
        calls.append(Call(model="large", role="shadow", cost_usd=0.01))
        calls.append(Call(model="judge", role="judge", cost_usd=0.0005))
        verdicts.append({"gate": "shadow_agreement", "model": "small", "passed": True, "score": 1.0})
    return Trace(router="cascade-a", requested_model="cascade-a", final_model="large" if escalate else "small",
                 calls=calls, verdicts=verdicts, latency_ms=latency_ms, id=f"t{i}", created=created + i,
                 prompt=f"question {i}")


def test_cascade_split_from_stored_traces(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "traces.db")
    traces = [_trace(i, latency_ms=100.0 + i) for i in range(6)]                      # accepted at tier 1
    traces += [_trace(10 + i, escalate=True, latency_ms=1000.0 + 100 * i) for i in range(4)]  # escalated
    traces += [_trace(20, gate=False, shadow=True)]                                     # not a cascade request
    traces += [_trace(21, shadow=True, latency_ms=106.0)]                               # gated and shadowed
    store.write(traces)
    rec = cascade_records_from_traces(store.traces())
    assert rec is not None and len(rec.escalated) == 11 and rec.escalated.sum() == 4
    s = summarise_cascade(rec, n_boot=200)
    assert s.escalation_rate.value == pytest.approx(4 / 11)
    assert s.tier1.count == 7 and s.escalated.count == 4
    assert s.tier1.latency_p50 == pytest.approx(np.percentile([100, 101, 102, 103, 104, 105, 106], 50) / 1000)
    assert s.escalated.latency_p95 == pytest.approx(np.percentile([1000, 1100, 1200, 1300], 95) / 1000)
    # Spend counts the judge gates and the escalations, never the shadow call or the shadow judge.
    assert s.tier1.spend == pytest.approx(7 * 0.0015)
    assert s.escalated.spend == pytest.approx(4 * 0.0115)
    assert s.gate_spend == pytest.approx(11 * 0.0005)
    assert s.spend == pytest.approx(7 * 0.0015 + 4 * 0.0115)
    assert cascade_records_from_traces(store.traces(), router="other") is None


def test_report_shows_the_cascade_split(gsm8k_report, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, report, _ = gsm8k_report
    rec = CascadeRecords(escalated=np.array([False, False, True]), cost=np.array([0.001, 0.002, 0.02]),
                         latency=np.array([0.1, 0.2, 1.5]), gate_cost=np.array([0.0005] * 3), label="tiered",
                         source="traces")
    report.cascades = [summarise_cascade(rec, n_boot=50)]
    try:
        paths = write_report(report, tmp_path / "with-cascade.html")
    finally:
        report.cascades = []
    text = paths[0].read_text(encoding="utf-8")
    assert "<td>tiered (traces)</td><td>accepted at tier 1</td><td>2</td>" in text
    assert "<td>escalated</td><td>1</td><td>1500 ms</td>" in text
    assert any(p.name == "with-cascade-cascades.png" for p in paths)


class _Tiered(Router):
    """A router of kind cascade (cheap first, then the strong model) for the replay hook."""

    kind = "cascade"

    def route(self, request):  # type: ignore[no-untyped-def]
        return Route(steps=[self.step("a"), self.step("b")], router=self.name, reason="tiers")


def test_cascade_routers_without_a_replay_module_leave_a_note(data_dir) -> None:  # type: ignore[no-untyped-def]
    o = datasets.load("routellm/gsm8k").subset(np.arange(200))
    # The router's models "a" and "b" are the pair's columns (needed once gearshift.lab.replay replays it).
    columns = {"a": datasets.ROUTELLM_WEAK, "b": datasets.ROUTELLM_STRONG}
    report = build_report(o, routers=[_Tiered("tiers", None)], columns=columns, n_boot=20)
    try:
        import gearshift.lab.replay as cascade_lab
        has_hook = hasattr(cascade_lab, "cascade_records")
    except ImportError:
        has_hook = False
    if not has_hook:
        assert any("cascade replay is not available" in n for n in report.notes)
        assert report.cascades == []
    else:  # the first step has no gates: every request is answered there
        [c] = report.cascades
        assert c.label == "tiers" and c.requests == 200 and c.escalated.count == 0
        # It is also a point beside the other routers: always the weak answer, at the weak model's cost.
        [point] = [p for p in report.points if p.name == "tiers"]
        w = o.index(datasets.ROUTELLM_WEAK)
        assert point.quality.value == pytest.approx(float(np.mean(o.quality[:, w])))
        assert point.cost.value == pytest.approx(float(np.mean(o.cost[:, w])))
        assert any(r.router == "tiers" for r in report.level_results)


# --- the command -------------------------------------------------------------------------------------------


def test_report_command_writes_html_and_pngs(tmp_path: Path, data_dir) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "r" / "gsm8k.html"
    res = CliRunner().invoke(main, ["lab", "report", "--outcomes", "routellm/gsm8k", "--drop-contaminated",
                                    "--router", "length", "--n-boot", "50", "--levels", "0.9,0.97", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists() and sorted(p.name for p in out.parent.glob("*.png")) == [
        "gsm8k-levels.png", "gsm8k-pgr-share.png", "gsm8k-quality-cost.png"]
    text = out.read_text(encoding="utf-8")
    assert "1,307 prompts" in text and "keep 97%" in text  # 12 contaminated prompts dropped
    bad = CliRunner().invoke(main, ["lab", "report", "--outcomes", "routellm/gsm8k", "--router", "nope",
                                    "--out", str(tmp_path / "x.html")])
    assert bad.exit_code == 2 and "--router nope needs --config" in bad.output


def test_report_shows_the_configs_routers_unless_some_are_named(tmp_path: Path, data_dir) -> None:  # type: ignore[no-untyped-def]
    config = REPO / "examples" / "replay-gsm8k.yaml"
    out = tmp_path / "all.html"
    res = CliRunner().invoke(main, ["lab", "report", "--outcomes", "routellm/gsm8k", "--config", str(config),
                                    "--n-boot", "20", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    assert all(name in text for name in ("gearshift/auto", "gearshift/weak", "gearshift/strong"))
    named = tmp_path / "one.html"
    res = CliRunner().invoke(main, ["lab", "report", "--outcomes", "routellm/gsm8k", "--config", str(config),
                                    "--router", "gearshift/auto", "--n-boot", "20", "--out", str(named)])
    assert res.exit_code == 0, res.output
    assert "gearshift/auto" in named.read_text(encoding="utf-8") and "gearshift/weak" not in named.read_text(encoding="utf-8")


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="headless Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(gsm8k_report, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    html_path = gsm8k_report[2][0]
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,2000",
           html_path.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    deadline = time.monotonic() + 5
    while not shot.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert shot.exists() and shot.read_bytes().startswith(PNG_MAGIC)
    assert shot.stat().st_size > 50_000  # a page with plots, not a blank one


# --- reports from a trace store ------------------------------------------------------------------------------


def _config(tmp_path: Path) -> Path:
    cfg = {"models": {name: {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "upstream_id": name,
                             "price": {"input": p, "output": p}, "rank": r}
                      for name, p, r in (("small", 0.6, 1), ("large", 10.0, 9))},
           "routers": {"cascade-a": {"kind": "fixed", "model": "small"}},
           "store": {"url": "sqlite:///traces.db"}}
    import yaml

    path = tmp_path / "gearshift.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_report_from_cascade_traces_without_pairs(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = SQLiteStore(tmp_path / "traces.db")
    store.write([_trace(i, escalate=i % 3 == 0, latency_ms=100.0 + 10 * i) for i in range(30)])
    out = tmp_path / "cascades.html"
    res = CliRunner().invoke(main, ["lab", "report", "--config", str(config), "--n-boot", "50", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    assert "only the cascade split is shown" in text
    assert "<td>cascade-a (traces)</td><td>escalated</td><td>10</td>" in text
    assert "escalation rate 33.3%" in text
    assert (tmp_path / "cascades-cascades.png").read_bytes().startswith(PNG_MAGIC)
    assert not (tmp_path / "cascades-quality-cost.png").exists()


def test_report_counts_what_the_response_cache_saved(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = SQLiteStore(tmp_path / "traces.db")
    traces = [_trace(i, escalate=i % 3 == 0) for i in range(12)]
    traces[0].cache = "miss"
    hits = [Trace(router="cascade-a", requested_model="cascade-a", final_model="small", id=f"hit{i}", cache="hit",
                  cache_saved_usd=0.002, created=1_700_000_100.0 + i) for i in range(3)]
    store.write(traces + hits)
    out = tmp_path / "cached.html"
    res = CliRunner().invoke(main, ["lab", "report", "--config", str(config), "--n-boot", "50", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    assert "response cache: 3 hits, 1 misses, 0 bypassed, 0 not cacheable (hit rate 75.0%); hits saved $0.006000" in text
    assert "<td>cascade-a (traces)</td><td>escalated</td><td>4</td>" in text  # hits are no cascade requests


def test_report_from_shadow_pairs_and_cascades_in_traces(tmp_path: Path, data_dir) -> None:  # type: ignore[no-untyped-def]
    """Traces shaped as the gateway writes them, answered with GSM8K's recorded outcomes."""
    o = datasets.load("routellm/gsm8k")
    config = _config(tmp_path)
    store = SQLiteStore(tmp_path / "traces.db")
    traces = []
    for i in range(300):
        weak_right = bool(o.quality[i, 0])
        calls = [Call(model="small", role="primary", cost_usd=float(o.cost[i, 0]), latency_ms=200, input_tokens=50,
                      output_tokens=100)]
        verdicts: list[dict] = []
        escalate = i % 4 == 0  # a quarter of the requests go through a gate and escalate
        if escalate:
            calls += [Call(model="judge", role="judge", cost_usd=0.0002),
                      Call(model="large", role="escalation", cost_usd=float(o.cost[i, 1]), latency_ms=900)]
            verdicts.append({"gate": "judge", "model": "small", "passed": False, "score": 0.0})
        else:
            calls.append(Call(model="large", role="shadow", cost_usd=float(o.cost[i, 1])))
            verdicts += [{"gate": "shadow_agreement", "model": "small", "passed": weak_right,
                          "score": float(weak_right == bool(o.quality[i, 1]))},
                         {"gate": "shadow_reference", "model": "large", "passed": True, "score": 1.0}]
        traces.append(Trace(router="cascade-a", requested_model="cascade-a", final_model="large" if escalate else "small",
                            calls=calls, verdicts=verdicts, prompt=str(o.prompts[i]), id=f"g{i}",
                            latency_ms=1100.0 if escalate else 200.0, shadowed=not escalate))
    store.write(traces)
    out = tmp_path / "traces.html"
    res = CliRunner().invoke(main, ["lab", "report", "--config", str(config), "--router", "length", "--n-boot", "50",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    assert "weak <b>small</b>, strong <b>large</b>" in text and "225 prompts" in text  # the shadowed three quarters
    assert "<td>length</td>" in text and "<td>cascade-a (traces)</td><td>escalated</td><td>75</td>" in text
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 4
