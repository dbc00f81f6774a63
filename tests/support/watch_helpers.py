"""Hand-made traces for the watch tests: a two-model cascade (weak -> strong) with gates and shadows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gearshift.config import Config
from gearshift.trace import Call, Trace
from tests.support.configs import parse_config

WEAK, STRONG = "weak", "strong"
# weak: 0.5/1.5 USD per 1M tokens; strong: 10/30. A 100-in, 50-out answer costs 0.000125 / 0.0025.
WEAK_COST, STRONG_COST = 0.000125, 0.0025


def watch_config(tmp_path: Path | None = None, **watch: Any) -> Config:
    data: dict[str, Any] = {
        "models": {
            WEAK: {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "price": {"input": 0.5, "output": 1.5},
                   "rank": 1},
            STRONG: {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "price": {"input": 10, "output": 30},
                     "rank": 9},
        },
        "routers": {"cascade": {"kind": "fixed", "model": WEAK}},
        "watch": {"min_requests": 20, "min_shadow_pairs": 20, **watch},
    }
    if tmp_path is not None:
        data["store"] = {"url": "sqlite:///traces.db"}
    return parse_config(data, base_dir=tmp_path or ".")


def _answer(model: str, role: str) -> Call:
    cost = WEAK_COST if model == WEAK else STRONG_COST
    return Call(model=model, role=role, input_tokens=100, output_tokens=50, cost_usd=cost, latency_ms=40.0,
                response="42")


def cascade_trace(*, escalated: bool = False, shadow: bool | None = None, tokens: int = 50,
                  score: float | None = 0.5, latency_ms: float = 100.0, status: int = 200,
                  created: float | None = None, router: str = "cascade", direct_strong: bool = False) -> Trace:
    """One request: weak answers and a length gate judges it; on failure strong answers (escalation).
    `direct_strong` routes straight to strong (no gate). `shadow` adds a reference call and its verdict."""
    t = Trace(router=router, requested_model=router, estimated_tokens=tokens, score=score, latency_ms=latency_ms,
              status=status, prompt="q" * tokens * 4)
    if created is not None:
        t.created = created
    if status != 200:
        t.calls.append(Call(model=WEAK, role="primary", status=status, error="upstream failed"))
        t.error = "upstream failed"
        return t
    if direct_strong:
        t.calls.append(_answer(STRONG, "primary"))
        t.final_model = STRONG
    else:
        t.calls.append(_answer(WEAK, "primary"))
        t.calls.append(Call(model="length", role="gate", status=422 if escalated else 200))
        t.verdicts.append({"gate": "length", "model": WEAK, "passed": not escalated, "score": 0.0 if escalated else 1.0,
                           "reasons": []})
        if escalated:
            t.calls.append(_answer(STRONG, "escalation"))
        t.final_model = STRONG if escalated else WEAK
    if shadow is not None:
        # As gateway/shadow.py records a pair: the shadow call (then its judge's) appended after the
        # serving calls, a verdict on the judged answer and one for the reference. When the client got
        # the reference's answer, the shadow explores: the cheaper model answers and is judged.
        explore = t.final_model == STRONG
        t.calls.append(_answer(WEAK if explore else STRONG, "shadow"))
        t.calls.append(Call(model=STRONG, role="judge", input_tokens=200, output_tokens=2, cost_usd=0.00206))
        t.verdicts.append({"gate": "shadow_agreement", "model": WEAK if explore else t.final_model,
                           "passed": shadow, "score": 1.0 if shadow else 0.0, "method": "judge", "reasons": []})
        t.verdicts.append({"gate": "shadow_reference", "model": STRONG, "passed": True, "score": 1.0,
                           "method": "reference", "reasons": []})
        t.shadowed = True
    return t


def batch(n: int, escalated_share: float = 0.2, agree_share: float | None = None, **kw: Any) -> list[Trace]:
    """n cascade traces, the first round(n * escalated_share) escalated; with `agree_share`, every
    weak-answered trace is shadowed and the first that share of them agree."""
    out = []
    n_esc = round(n * escalated_share)
    weak_n = n - n_esc
    n_agree = round(weak_n * agree_share) if agree_share is not None else 0
    j = 0
    for i in range(n):
        esc = i < n_esc
        shadow = None
        if agree_share is not None and not esc:
            shadow = j < n_agree
            j += 1
        out.append(cascade_trace(escalated=esc, shadow=shadow, **kw))
    return out
