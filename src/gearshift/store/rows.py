"""Trace, call and version rows as every SQL store writes and reads them (one encoding for all)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gearshift.store.view import TraceView
from gearshift.trace import SHADOW_ROLES, Trace

TRACE_COLS = ("id", "created", "router", "requested_model", "reason", "route", "final_model", "status",
              "streamed", "cost_usd", "latency_ms", "estimated_tokens", "score", "client", "metadata",
              "verdicts", "prompt", "response", "error", "arm", "shadowed", "shadow_cost_usd",
"answer_call", "response_truncated", "endpoint", "team", "cache", "cache_saved_usd")
# Per-trace facts (view.Facts) the dashboard sums in SQL: written with every trace (and rewritten with it
# when its shadow pair arrives), never read back as part of a trace. `facts` is FACTS_VERSION on rows
# that carry them; rows an older gearshift wrote have 0 until the store backfills them.
FACT_COLS = ("answered", "gated", "escalated", "verdict", "verdicts_n", "verdicts_passed", "cf_input_tokens",
             "cf_output_tokens", "estimated_calls", "pair_reference", "pair_n", "pair_passed", "pair_judged",
             "pair_disagreed", "pair_resolved", "pair_weak", "pair_ref_grade", "facts")
FACTS_VERSION = 1
CALL_COLS = ("trace_id", "idx", "model", "role", "input_tokens", "output_tokens", "usage_estimated",
             "cost_usd", "latency_ms", "status", "error", "attempt", "response", "truncated")
FEEDBACK_COLS = ("trace_id", "created", "score", "label", "source", "comment", "client")
VERSION_COLS = ("router", "version", "created", "created_by", "settings", "metrics", "active", "promoted_by",
                "promoted_at")

# A virtual key's row. The hash is read only by the lookup (KEY_BY_HASH), never listed.
KEY_COLS = ("name", "team", "prefix", "admin", "routers", "models", "rpm", "tpm", "usd_day", "usd_month", "expires",
            "created", "created_by", "revoked_at", "revoked_by", "updated")
KEY_FIELDS = ("team", "admin", "routers", "models", "rpm", "tpm", "usd_day", "usd_month", "expires")  # updatable


def encode(traces: Sequence[Trace]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Trace rows and call rows, in TRACE_COLS + FACT_COLS and CALL_COLS order (JSON as text, booleans as 0/1).

    Serving and shadow cost, and the facts (FACT_COLS), are the trace's TraceView's: computed here, in the
    store's write path, never on the event loop. The JSON columns are the text `json.dumps` makes, with the
    common values (the router's route, no metadata, no verdicts) not encoded again per trace.
    The answer is stored once: when a call holds the trace's answer, the trace row names that call
    (`answer_call`) instead of repeating the text."""
    trows, crows = [], []
    routes: dict[tuple[str, ...], str] = {}  # a batch holds few distinct routes
    for t in traces:
        tid = t.id
        view = TraceView.of(t)
        for i, c in enumerate(t.calls):
            crows.append((tid, i, c.model, c.role, c.input_tokens, c.output_tokens, int(c.usage_estimated),
                          c.cost_usd, c.latency_ms, c.status, c.error, c.attempt, c.response, int(c.truncated)))
        answer, answer_call = t.response, _answer_call(t)
        if answer_call is not None:
            answer = None
        key = tuple(t.route)
        route = routes.get(key)
        if route is None:
            route = routes[key] = json.dumps(t.route)
        trows.append((tid, t.created, t.router, t.requested_model, t.reason, route,
                      t.final_model, t.status, int(t.streamed), view.cost_usd, t.latency_ms, t.estimated_tokens,
                      t.score, t.client, json.dumps(t.metadata) if t.metadata else "{}",
                      json.dumps(t.verdicts) if t.verdicts else "[]", t.prompt, answer,
                      t.error, t.arm, int(t.shadowed), view.shadow_cost_usd, answer_call, int(t.response_truncated),
                      t.endpoint, t.team, t.cache, t.cache_saved_usd, *facts(view)))
    return trows, crows


def facts(t: TraceView) -> tuple[Any, ...]:
    """A trace's fact columns, in FACT_COLS order."""
    f = t.facts
    p = f.pair
    return (int(f.answered), int(f.gated), int(f.escalated), f.verdict, f.verdicts, f.verdicts_passed,
            f.cf_input_tokens, f.cf_output_tokens, f.estimated_calls, f.pair_reference, p.pairs, p.passed, p.judged,
            p.disagreed, p.resolved, p.resolved_weak, p.resolved_reference, FACTS_VERSION)


def _answer_call(t: Trace) -> int | None:
    """The index of the (last) serving call whose answer is the trace's answer, if any."""
    r = t.response
    if r is None:
        return None
    for i in range(len(t.calls) - 1, -1, -1):
        c = t.calls[i]
        cr = c.response
        # Identity first: the gateway hands the call's own string to the trace.
        if cr is not None and c.role not in SHADOW_ROLES and (cr is r or (len(cr) == len(r) and cr == r)) \
                and c.truncated == t.response_truncated:
            return i
    return None


def decode_call(row: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """(trace id, call dict) of a call row."""
    d = dict(zip(CALL_COLS, row, strict=True))
    d["usage_estimated"] = bool(d["usage_estimated"])
    d["truncated"] = bool(d["truncated"])
    return d.pop("trace_id"), d


def decode_trace(row: Sequence[Any], calls: list[dict[str, Any]]) -> dict[str, Any]:
    d = dict(zip(TRACE_COLS, row, strict=True))
    d["route"] = json.loads(d["route"] or "[]")
    d["metadata"] = json.loads(d["metadata"] or "{}")
    d["verdicts"] = json.loads(d["verdicts"] or "[]")
    d["streamed"] = bool(d["streamed"])
    d["shadowed"] = bool(d["shadowed"])
    d["response_truncated"] = bool(d["response_truncated"])
    answer_call = d.pop("answer_call")
    if answer_call is not None:
        d["response"] = next((c["response"] for c in calls if c["idx"] == answer_call), None)
    d["calls"] = calls
    return d


def decode_version(row: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip(VERSION_COLS, row, strict=True))
    d["settings"], d["metrics"], d["active"] = json.loads(d["settings"]), json.loads(d["metrics"]), bool(d["active"])
    return d


def encode_key_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A key's updatable fields as stored (router and model lists as JSON text, admin as 0/1)."""
    out = dict(fields)
    for name in ("routers", "models"):
        if name in out and out[name] is not None:
            out[name] = json.dumps(sorted(out[name]))
    if "admin" in out:
        out["admin"] = int(bool(out["admin"]))
    return out


def decode_key(row: Sequence[Any], cols: Sequence[str] = KEY_COLS) -> dict[str, Any]:
    d = dict(zip(cols, row, strict=True))
    for name in ("routers", "models"):
        d[name] = None if d[name] is None else json.loads(d[name])
    d["admin"] = bool(d["admin"])
    return d
