"""The dashboard's figures from a store: empty installs, buckets, and what a rollback restores."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gearshift.gateway.summary import summarise
from gearshift.store.sqlite import SQLiteStore
from gearshift.store.view import TraceView
from gearshift.trace import Call
from gearshift.ui import data
from gearshift.watch.windows import compute_stats
from tests.support.configs import load_config
from tests.support.traces import trace
from tests.support.ui_helpers import ui_config_file


def test_a_new_install_has_empty_pages_not_errors(tmp_path: Path) -> None:
    config = load_config(ui_config_file(tmp_path))
    store = SQLiteStore(tmp_path / "traces.db")
    o = data.overview(store, config, 24)
    assert o["summary"]["requests"] == 0 and o["series"] == [] and o["store_traces"] == 0
    assert o["quality"]["retained"] is None and o["feedback"] == {"count": 0, "mean": None}
    assert data.traces(store, {})["traces"] == []
    assert data.watch(store, config)["report"] is None
    assert data.ab(store, config, 24)["arms"] == [] and "at least two arms" in data.ab(store, config, 24)["empty"]
    assert data.keys(store, config, 24)["clients"] == []
    assert [r["versions"] for r in data.routers(store, config, 24)["routers"]] == [[], [], [], []]
    assert data.reports(None)["reports"] == [] and data.reports(tmp_path / "none")["reports"] == []


def test_overview_buckets_add_up_to_the_summary(tmp_path: Path) -> None:
    config = load_config(ui_config_file(tmp_path))
    store = SQLiteStore(tmp_path / "traces.db")
    now = 1_800_000_000.0
    rows = [trace("gearshift/cascade", created=now - 3600 * 20 + 600 * i) for i in range(100)]
    for t in rows[::4]:
        t.calls.append(Call(model="gpt-4-1106", role="escalation", input_tokens=12, output_tokens=30, cost_usd=0.001))
    store.write(rows)
    o = data.overview(store, config, 24, now=now)
    assert o["bucket_seconds"] == 3600 and len(o["series"]) <= data.POINTS
    assert sum(p["requests"] for p in o["series"]) == o["summary"]["requests"] == 100
    assert sum(p["spend_usd"] for p in o["series"]) == pytest.approx(o["summary"]["spend_usd"])
    assert sum(p["counterfactual_usd"] for p in o["series"]) == pytest.approx(o["summary"]["counterfactual_usd_estimate"])
    assert data.overview(store, config, 1, now=now)["store_traces"] == 100  # a quiet hour in a used store


def test_a_rollback_restores_the_version_promoted_before_the_active_one() -> None:
    versions = [{"version": 1, "active": False, "promoted_at": 10.0}, {"version": 2, "active": False, "promoted_at": 30.0},
                {"version": 3, "active": True, "promoted_at": 40.0}, {"version": 4, "active": False, "promoted_at": None}]
    assert data.rollback_target(versions)["version"] == 2  # type: ignore[index]
    assert data.rollback_target(versions[2:]) is None
    assert data.bucket_seconds(1) == 180 and data.bucket_seconds(24) == 3600 and data.bucket_seconds(0.01) == 60


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Any]:
    """A gateway's store after replayed GSM8K traffic (a shadowed cascade, an A/B split), with feedback."""
    from gearshift.outcomes.datasets import load
    from tests.support.ui_helpers import ui_gateway

    prompts = [str(p) for p in load("routellm/gsm8k").prompts[:120]]
    with ui_gateway(tmp_path_factory.mktemp("facts"), prompts, feedback_every=5) as running:
        yield running


def test_every_page_figure_summed_in_sql_is_the_figure_of_the_full_rows(replay: Any) -> None:
    store, config = replay.gateway.store, replay.gateway.config
    rows = list(store.traces())
    views = [TraceView.of(r) for r in rows]
    assert any(v.escalated for v in views) and any(v.pairs for v in views) and any(v.arm for v in views)
    now = max(v.created for v in views) + 1  # type: ignore[type-var]
    o = data.overview(store, config, 24, now=now)
    assert o["summary"] == _approx_latency(summarise(rows, config))
    stats = compute_stats(rows, config)
    low_high = stats.quality_retained(config.watch.confidence)
    assert low_high is not None and stats.estimate.pairs > 0
    assert (o["quality"]["retained"], o["quality"]["low"], o["quality"]["high"]) == pytest.approx(low_high)
    assert o["quality"]["pairs"] == stats.estimate.pairs and o["quality"]["strong_share"] == stats.strong_share
    # Chart buckets of whole hours (the rollups'), the first starting at the hour that holds the range's start.
    width, start = o["bucket_seconds"], o["since"] // 3600 * 3600
    buckets: dict[int, list[TraceView]] = defaultdict(list)
    for v in views:
        buckets[int((v.created - start) // width)].append(v)  # type: ignore[operator]
    expected = [{"t": start + b * width, "requests": len(part), "spend_usd": summarise(part, config)["spend_usd"],
                 "counterfactual_usd": summarise(part, config)["counterfactual_usd_estimate"]}
                for b, part in sorted(buckets.items())]
    assert o["series"] == _approx(expected)
    for verdict in ("pass", "fail", "none"):
        listed = data.traces(store, {"verdict": verdict}, limit=1000)["traces"]
        assert {t["id"] for t in listed} == {v.id for v in views if v.gate_verdict == verdict}


def test_the_overview_from_hourly_rollups_is_the_summary_of_the_full_rows(replay: Any) -> None:
    """Ranges starting and ending mid-hour: whole hours from the writer's rollups (traces re-written with their
    shadow pairs included), the edges from the facts; the same figures as `summarise` over the range's rows."""
    from gearshift.gateway.summary import summary_of
    from gearshift.store.view import Totals

    store, config = replay.gateway.store, replay.gateway.config
    rows = list(store.traces())
    assert any(TraceView.of(r).pairs for r in rows)  # the shadow pairs arrived: those traces were written twice
    first, last = min(r["created"] for r in rows), max(r["created"] for r in rows)
    now = (last // 3600 + 1) * 3600 + 1234.5  # every trace in a whole hour of the day before `now`
    o = data.overview(store, config, 24, now=now)
    assert o["summary"] == _approx_latency(summarise(rows, config))
    assert sum(p["requests"] for p in o["series"]) == len(rows)
    created = sorted(r["created"] for r in rows)
    middle = (created[len(rows) // 2 - 1] + created[len(rows) // 2]) / 2  # a range from mid-traffic: its hour read in part
    until = (last // 3600 + 2) * 3600 + 600.0
    sums = store.range_sums(middle, until, config.strongest(), 3600.0)
    assert sums.buckets[0][0] == middle // 3600 * 3600
    totals = Totals()
    for _, part in sums.buckets:
        totals.merge(part)
    inside = [r for r in rows if middle <= r["created"] < until]
    assert 0 < len(inside) < len(rows) and first < middle
    got = summary_of(totals, config, None, sums.tier1, sums.escalated, sums.calls)
    assert got == _approx_latency(summarise(inside, config))
    want = Totals.of(inside, config.strongest())
    assert (totals.start, totals.end, totals.served) == (want.start, want.end, want.served)


def test_the_ab_page_reads_only_the_signals_columns_and_reports_what_the_full_traces_give(replay: Any) -> None:
    from dataclasses import asdict

    from gearshift.lab.ab import ab_report

    store = replay.gateway.store
    feedback = store.feedback()
    for router in ("gearshift/ab", None):  # a split's arms; every router side by side (gates, shadow pairs)
        slim = store.ab_rows(router=router)
        assert slim.id and len(slim.verdicts) < len(slim.id)  # the verdicts only of the traces with a shadow agreement
        got = asdict(ab_report(slim, feedback, router=router, n=200))
        assert got == _approx(asdict(ab_report(list(store.traces()), feedback, router=router, n=200)))
    counts = [a["counts"] for a in got["arms"]]
    assert all(sum(c[s] for c in counts) > 0 for s in ("gate_pass", "shadow_agreement", "feedback"))


def _approx_latency(summary: dict[str, Any]) -> Any:
    """A summary compared approximately, its latency percentiles to the rollups' histogram resolution (1%)."""
    out = _approx(summary)
    for cohort in ("accepted_at_tier1", "escalated"):
        for q in ("latency_p50_ms", "latency_p95_ms"):
            value = summary["cascade"][cohort][q]
            out["cascade"][cohort][q] = None if value is None else pytest.approx(value, rel=0.01)
    return out


def _approx(x: Any) -> Any:
    """x with every float compared approximately (SQL sums in another order)."""
    if isinstance(x, dict):
        return {k: _approx(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_approx(v) for v in x]
    return pytest.approx(x) if isinstance(x, float) else x
