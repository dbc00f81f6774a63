"""A stored-trace factory for store and retention tests."""

from __future__ import annotations

from gearshift.trace import Call, Trace


def trace(router: str = "gearshift/auto", created: float | None = None, **kw: object) -> Trace:
    t = Trace(router=router, requested_model=router, reason="rule short", route=["small", "large"],
              final_model="small", metadata={"tier": "free"}, prompt="What is 2+2?", response="4",
              calls=[Call(model="small", role="primary", input_tokens=12, output_tokens=3, cost_usd=0.0001,
                          latency_ms=40.5, response="4")],
              verdicts=[{"gate": "length", "passed": True}], **kw)  # type: ignore[arg-type]
    if created is not None:
        t.created = created
    return t
