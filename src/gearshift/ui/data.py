"""What each UI page shows, as JSON-ready dicts: read from the store through the readers the CLI,
the watch and the lab use (summary, TraceView, PairEstimate, ab_report), never re-derived here."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gearshift.config import Config
from gearshift.gateway.keys import list_keys
from gearshift.gateway.summary import summary_of
from gearshift.store.base import TraceStore
from gearshift.store.view import Totals, TraceView
from gearshift.watch.windows import stats_of

POINTS = 24  # buckets per chart over the chosen range


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


def bucket_seconds(hours: float) -> float:
    """The width of one chart bucket over a range of `hours`: about POINTS buckets, whole minutes."""
    return max(60.0, math.ceil(hours * 3600 / POINTS / 60) * 60)


def overview(store: TraceStore, config: Config, hours: float, now: float | None = None) -> dict[str, Any]:
    """Requests, spend against always-strongest, savings, quality retained with its interval, escalation
    rate and latency, over the last `hours`; and the same spend figures per time bucket.

    Summed in SQL from the traces' fact columns and the writer's hourly rollups (TraceStore.range_sums): the
    same Totals `summarise` and the watch's `compute_stats` count from full rows, turned into figures by the
    same `summary_of` and `stats_of` (latency percentiles to the rollups' histogram resolution, 1%)."""
    now = time.time() if now is None else now
    since = now - hours * 3600
    width = bucket_seconds(hours)
    reference = config.watch.reference or config.strongest()
    sums = store.range_sums(since, now, reference, width)
    totals = Totals()
    for _, part in sums.buckets:
        totals.merge(part)
    s = summary_of(totals, config, None, sums.tier1, sums.escalated, sums.calls)
    price = config.models[s["reference_model"]].price
    series = [{"t": t, "requests": part.requests, "spend_usd": part.spend_usd,
               "counterfactual_usd": part.counterfactual_cost(price)} for t, part in sums.buckets]
    # Quality retained as the watch measures it: served pairs, the strong model's share counted as kept.
    stats = stats_of(totals, config, reference)
    quality = stats.quality_retained(config.watch.confidence)
    feedback = [f["score"] for f in store.feedback(since)]
    return {
        "since": since, "until": now, "hours": hours, "bucket_seconds": width,
        "summary": s, "series": series,
        "quality": {**stats.estimate.to_json(), "retained": quality[0] if quality else None,
                    "low": quality[1] if quality else None, "high": quality[2] if quality else None,
                    "strong_share": stats.strong_share, "how": stats.estimate.line()},
        "feedback": {"count": len(feedback), "mean": sum(feedback) / len(feedback) if feedback else None},
        "store_traces": store.count() if not totals.requests else None,  # an empty range: is the store empty too?
    }


def verdict_of(t: TraceView) -> str:
    """The gates' verdict on the served answer: pass (all passed), fail (one failed) or none."""
    return t.gate_verdict


def trace_row(r: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the traces list."""
    t = TraceView.of(r)
    return {"id": t.id, "created": t.created, "router": t.router, "model": t.final_model, "status": t.status,
            "client": r.get("client"), "escalated": t.escalated, "verdict": verdict_of(t),
            "cost_usd": t.cost_usd, "latency_ms": t.latency_ms}


FILTERS = ("router", "model", "status", "client")


def traces(store: TraceStore, query: Mapping[str, str], limit: int = 100) -> dict[str, Any]:
    """The newest traces matching the query's filters (router, model, status, client, escalated,
    verdict, since/until as epoch seconds), each an indexed column of the store."""
    kw: dict[str, Any] = {k: query[k] for k in FILTERS if query.get(k)}
    for k in ("since", "until"):
        if query.get(k):
            kw[k] = float(query[k])
    if query.get("escalated") in ("yes", "no"):
        kw["escalated"] = query["escalated"] == "yes"
    if query.get("verdict"):
        kw["verdict"] = query["verdict"]  # pass, fail or none (TraceView.gate_verdict); any other matches nothing
    found = store.find_traces(limit=limit, **kw)
    return {"traces": [trace_row(r) for r in found], "filters": {**{k: v for k, v in query.items() if v}}}


def trace_detail(store: TraceStore, trace_id: str) -> dict[str, Any] | None:
    """One trace: its route and reason, calls, gates and verdicts, cost, latency and shadow pair."""
    found = store.find_traces(trace_id=trace_id, limit=1)
    if not found:
        return None
    r = found[0]
    t = TraceView.of(r)
    return {
        **trace_row(r),
        "requested_model": r.get("requested_model"), "reason": r.get("reason"), "route": r.get("route"),
        "arm": t.arm, "endpoint": t.endpoint, "streamed": t.streamed, "error": t.error,
        "prompt": t.prompt, "response": r.get("response"), "metadata": dict(t.metadata),
        "gate_cost_usd": t.gate_cost_usd, "shadow_cost_usd": t.shadow_cost_usd,
        "calls": [{"model": c.model, "role": c.role, "input_tokens": c.input_tokens, "output_tokens": c.output_tokens,
                   "cost_usd": c.cost_usd, "latency_ms": c.latency_ms, "status": c.status, "error": c.error,
                   "shadow": i >= t.shadow_start} for i, c in enumerate(t.calls)],
        "verdicts": [{"gate": v.gate, "model": v.model, "passed": v.passed, "score": _finite(v.score),
                      "reasons": raw.get("reasons"), "shadow": v.shadow}
                     for v, raw in zip(t.verdicts, [v for v in r.get("verdicts") or () if isinstance(v, Mapping)],
                                       strict=True)],
        "pairs": [{"model": p.model, "reference": p.reference, "passed": p.passed, "score": _finite(p.score),
                   "method": p.method} for p in t.pairs],
    }


def routers(store: TraceStore, config: Config, hours: float, now: float | None = None,
            states: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Each configured router: kind, versions (who made and promoted them, when), what a rollback would
    restore, its live state when a gateway serves it; and the decision mix over time."""
    now = time.time() if now is None else now
    versions = store.router_versions()
    by_router: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for v in versions:
        proof = v["metrics"].get("proof") if isinstance(v["metrics"], dict) else None
        by_router[v["router"]].append({**v, "proof": proof.get("reason") if isinstance(proof, dict) else None})
    out = []
    for name in sorted(set(config.routers) | set(by_router)):
        rc = config.routers.get(name)
        vs = by_router.get(name, [])
        back = rollback_target(vs)
        out.append({"name": name, "kind": getattr(rc, "kind", None), "mode": getattr(rc, "mode", None),
                    "versions": vs, "rollback_to": back["version"] if back else None,
                    "state": dict(states[name]) if states and name in states else None})
    width = bucket_seconds(hours)
    mix = [{"t": t, "router": r, "model": m, "requests": n} for t, r, m, n in store.decision_mix(now - hours * 3600, width)]
    return {"routers": out, "mix": mix, "bucket_seconds": width, "hours": hours}


def rollback_target(versions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The version a rollback restores: among those promoted before and no longer active, the one
    promoted last (None when no earlier promotion is stored)."""
    earlier = [v for v in versions if not v["active"] and v.get("promoted_at") is not None]
    return max(earlier, key=lambda v: v["promoted_at"]) if earlier else None


def keys(store: TraceStore, config: Config, hours: float | None, now: float | None = None) -> dict[str, Any]:
    """Spend per client key and per team over the range (the traces' `client` and `team`), the teams' budgets,
    the configured keys, and the virtual keys with their state and spend today and this month."""
    now = time.time() if now is None else now
    since = None if hours is None else now - hours * 3600

    def spend(by: str) -> list[dict[str, Any]]:
        return [{by: c, "requests": n, "spend_usd": usd, "errors": err} for c, n, usd, err in store.client_spend(since, by)]

    configured = [{"name": k.name, "admin": k.admin, "team": k.team} for k in config.client_keys]
    budgets = {name: t.limits.model_dump() if t.limits else {} for name, t in config.teams.items()}
    try:
        virtual = list_keys(store, now)
    except NotImplementedError:  # a store without a keys table
        virtual = []
    return {"clients": spend("client"), "teams": spend("team"), "budgets": budgets, "keys": configured,
            "virtual": virtual, "hours": hours}


def ab(store: TraceStore, config: Config, hours: float, router: str | None = None,
       now: float | None = None) -> dict[str, Any]:
    """Arms of a split router (by default the config's first) with intervals (bootstrap, normal for big varied
    samples) and Welch p-values against control, from lab.ab over the store's A/B columns; without a split
    router, the routers side by side."""
    from gearshift.lab.ab import ab_report

    splits = sorted(name for name, rc in config.routers.items() if rc.kind == "split")
    router = router or (splits[0] if splits else None)
    now = time.time() if now is None else now
    since = now - hours * 3600
    try:
        report = ab_report(store.ab_rows(since=since, router=router), store.feedback(since), router=router, n=400)
    except ValueError as e:
        return {"arms": [], "differences": {}, "empty": str(e), "hours": hours, "router": router, "splits": splits}

    def est(e: Any) -> dict[str, float]:
        return {"value": e.value, "low": e.low, "high": e.high}

    return {
        "control": report.control, "hours": hours, "router": router, "splits": splits,
        "arms": [{"name": a.name, "requests": a.requests, "latency_p95_ms": a.latency_p95_ms, "counts": a.counts,
                  "signals": {k: est(v) for k, v in a.signals.items()}} for a in report.arms],
        "differences": {arm: [{"signal": d.signal, **est(d.diff), "p_value": _finite(d.p_value), "n_arm": d.n_arm,
                               "n_control": d.n_control} for d in rows] for arm, rows in report.differences.items()},
    }


def reports(folder: Path | None) -> dict[str, Any]:
    """The lab reports (HTML files) in the reports folder, newest first."""
    if folder is None or not folder.is_dir():
        return {"folder": str(folder) if folder else None, "reports": []}
    found = sorted(folder.glob("*.html"), key=lambda p: p.stat().st_mtime, reverse=True)
    return {"folder": str(folder), "reports": [{"name": p.name, "modified": p.stat().st_mtime, "bytes": p.stat().st_size}
                                               for p in found]}


def watch(store: TraceStore, config: Config, hours: float = 24.0, now: float | None = None) -> dict[str, Any]:
    """The watch's check of the latest window against its baseline (the same readers as the in-server
    loop and `gearshift watch`), the alert episodes the loop keeps in the store, and those of them that
    overlap the last `hours` (open ones end now)."""
    from gearshift.watch.drift import Watch
    from gearshift.watch.loop import alerts_name, load_baseline, store_baseline
    from gearshift.watch.windows import recent_traces

    wc = config.watch
    now = time.time() if now is None else now
    watched = alerts_name(wc)
    baseline = load_baseline(config) or store_baseline(store, config)[0]
    state = store.watch_state(watched) or {}
    alerts = [{"metric": name, "since": a.get("since"), "message": a.get("message"), "value": a.get("value"),
               "baseline": a.get("baseline")} for name, a in (state.get("active") or {}).items()]
    out = {"alerts": alerts, "needed": wc.min_requests, "enabled": wc.enabled, "window_requests": wc.window_requests,
           "since": now - hours * 3600, "until": now, "hours": hours,
           "episodes": store.watch_episodes(since=now - hours * 3600, until=now, watch=watched)}
    if baseline is None:
        return {"report": None, **out}
    traces = recent_traces(store, wc.window_requests, wc.window_seconds, wc.router)
    return {"report": Watch(config).check(traces, baseline).to_dict(), **out}
