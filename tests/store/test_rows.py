"""Rows as stored: the fast encoding writes exactly the text and values the plain one did."""

from __future__ import annotations

import json
from typing import Any

from gearshift.store.rows import CALL_COLS, TRACE_COLS, encode
from gearshift.trace import Call, Trace


def plain(t: Trace) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The encoding as first written: every JSON column dumped, costs from the trace's properties."""
    trow = (t.id, t.created, t.router, t.requested_model, t.reason, json.dumps(t.route), t.final_model, t.status,
            int(t.streamed), t.cost_usd, t.latency_ms, t.estimated_tokens, t.score, t.client, json.dumps(t.metadata),
            json.dumps(t.verdicts), t.prompt, t.response, t.error, t.arm, int(t.shadowed), t.shadow_cost_usd)
    crows = [(t.id, i, c.model, c.role, c.input_tokens, c.output_tokens, int(c.usage_estimated), c.cost_usd,
              c.latency_ms, c.status, c.error, c.attempt, c.response) for i, c in enumerate(t.calls)]
    return trow, crows


def test_encode_matches_the_plain_encoding_text_for_text() -> None:
    bare = Trace(router="r", requested_model="r")
    full = Trace(router="c", requested_model="c", route=["small", "large"], metadata={"tier": "pro", "é": "ü"},
                 verdicts=[{"gate": "arithmetic", "model": "small", "passed": False, "score": 0.25, "reasons": ["x"]}],
                 streamed=True, shadowed=True, score=0.5, arm="a", prompt="q", response="a", error=None)
    full.calls = [Call("small", "primary", 10, 2, cost_usd=1e-6, response="7"),
                  Call("arithmetic", "gate", status=422),
                  Call("large", "escalation", 10, 5, usage_estimated=True, cost_usd=3.3e-5),
                  Call("large", "shadow", 10, 5, cost_usd=2e-5)]
    same_route = Trace(router="c", requested_model="c", route=["small", "large"])
    trows, crows = encode([bare, full, same_route])
    expected = [plain(t) for t in (bare, full, same_route)]
    assert trows == [e[0] for e in expected]
    assert crows == [c for e in expected for c in e[1]]
    assert all(len(r) == len(TRACE_COLS) for r in trows) and all(len(c) == len(CALL_COLS) for c in crows)
    assert [type(v) for v in trows[1]] == [type(v) for v in expected[1][0]]
