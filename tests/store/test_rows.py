"""Rows as stored: the fast encoding writes exactly the text and values the plain one did."""

from __future__ import annotations

import json
from typing import Any

from gearshift.store.rows import CALL_COLS, FACT_COLS, TRACE_COLS, decode_call, decode_trace, encode, facts
from gearshift.store.view import TraceView
from gearshift.trace import Call, Trace


def plain(t: Trace) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The encoding as first written: every JSON column dumped, costs from the trace's properties."""
    trow = (t.id, t.created, t.router, t.requested_model, t.reason, json.dumps(t.route), t.final_model, t.status,
            int(t.streamed), t.cost_usd, t.latency_ms, t.estimated_tokens, t.score, t.client, json.dumps(t.metadata),
            json.dumps(t.verdicts), t.prompt, t.response, t.error, t.arm, int(t.shadowed), t.shadow_cost_usd,
            None, int(t.response_truncated), t.endpoint, t.team, t.cache, t.cache_saved_usd, *facts(TraceView.of(t)))
    crows = [(t.id, i, c.model, c.role, c.input_tokens, c.output_tokens, int(c.usage_estimated), c.cost_usd,
              c.latency_ms, c.status, c.error, c.attempt, c.response, int(c.truncated)) for i, c in enumerate(t.calls)]
    return trow, crows


def test_encode_matches_the_plain_encoding_text_for_text() -> None:
    bare = Trace(router="r", requested_model="r")
    full = Trace(router="c", requested_model="c", route=["small", "large"], metadata={"tier": "pro", "é": "ü"},
                 verdicts=[{"gate": "arithmetic", "model": "small", "passed": False, "score": 0.25, "reasons": ["x"]}],
                 streamed=True, shadowed=True, score=0.5, arm="a", prompt="q", response="a", error=None,
                 endpoint="responses", client="app", team="search")
    full.calls = [Call("small", "primary", 10, 2, cost_usd=1e-6, response="7"),
                  Call("arithmetic", "gate", status=422),
                  Call("large", "escalation", 10, 5, usage_estimated=True, cost_usd=3.3e-5),
                  Call("large", "shadow", 10, 5, cost_usd=2e-5)]
    same_route = Trace(router="c", requested_model="c", route=["small", "large"])
    trows, crows = encode([bare, full, same_route])
    expected = [plain(t) for t in (bare, full, same_route)]
    assert trows == [e[0] for e in expected]
    assert crows == [c for e in expected for c in e[1]]
    assert all(len(r) == len(TRACE_COLS) + len(FACT_COLS) for r in trows) and all(len(c) == len(CALL_COLS) for c in crows)
    assert [type(v) for v in trows[1]] == [type(v) for v in expected[1][0]]


def test_the_answer_is_stored_once_and_read_back_on_the_trace() -> None:
    answer = "the answer " * 10
    t = Trace(router="r", requested_model="r", response=answer,
              calls=[Call("small", "primary", response="first"), Call("large", "escalation", response=answer),
                     Call("large", "shadow", response=answer)])
    [trow], crows = encode([t])
    trow = trow[:len(TRACE_COLS)]  # what reads select: the facts are not part of a trace
    row = dict(zip(TRACE_COLS, trow, strict=True))
    assert row["response"] is None and row["answer_call"] == 1  # the escalation's text, not the shadow's
    calls = [decode_call(c)[1] for c in crows]
    assert decode_trace(trow, calls)["response"] == answer


def test_a_capped_answer_is_marked_truncated_on_the_trace_and_its_call() -> None:
    answer = "x" * 50
    t = Trace(router="r", requested_model="r", response=answer, calls=[Call("small", "primary", response=answer)])
    t.cap_answers(20)
    assert t.response == "x" * 20 and t.response_truncated and t.calls[0].truncated
    [trow], crows = encode([t])
    d = decode_trace(trow[:len(TRACE_COLS)], [decode_call(c)[1] for c in crows])
    assert d["response"] == "x" * 20 and d["response_truncated"] and d["calls"][0]["truncated"]
    assert d["calls"][0]["response"] == "x" * 20
