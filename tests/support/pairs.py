"""Shadow pairs as the gateway stores them, built from the recorded GSM8K answers (no server)."""

from __future__ import annotations

import numpy as np

from gearshift.gateway.compare import compare
from gearshift.outcomes.datasets import ROUTELLM_STRONG, ROUTELLM_WEAK, load
from gearshift.request import ChatRequest
from gearshift.store.view import SHADOW_RESOLUTION


def gsm8k_pair_traces(resolve_rate: float, seed: int = 0) -> tuple[list[dict], float]:
    """Each GSM8K prompt as the gateway records a shadow pair: Mixtral served, GPT-4 the reference, scored
    by final answer; a random `resolve_rate` of the disagreements graded by a judge that knows the truth
    (the recorded correctness). Also the recorded accuracy ratio Mixtral / GPT-4."""
    o = load("routellm/gsm8k")
    w, s = o.index(ROUTELLM_WEAK), o.index(ROUTELLM_STRONG)
    rng = np.random.default_rng(seed)
    rows = []
    for i, prompt in enumerate(o.prompts):
        req = ChatRequest(body={"messages": [{"role": "user", "content": prompt}]})
        verdict = compare(req, o.responses[i, w], o.responses[i, s], method="final_answer")
        assert verdict is not None
        verdicts = [{"gate": "shadow_agreement", "model": "weak", **verdict},
                    {"gate": "shadow_reference", "model": "strong", "passed": True, "score": 1.0, "method": "reference"}]
        if not verdict["passed"] and rng.random() < resolve_rate:
            verdicts += [{"gate": SHADOW_RESOLUTION, "model": m, "score": float(o.quality[i, j]), "method": "judge"}
                         for m, j in (("weak", w), ("strong", s))]
        rows.append({"id": str(i), "router": "r", "final_model": "weak", "prompt": prompt, "shadowed": True,
                     "calls": [{"model": "weak", "role": "primary", "response": o.responses[i, w], "cost_usd": 0.0001,
                                "input_tokens": 100, "output_tokens": 100},
                               {"model": "strong", "role": "shadow", "response": o.responses[i, s], "cost_usd": 0.003}],
                     "verdicts": verdicts})
    return rows, float(o.quality[:, w].mean() / o.quality[:, s].mean())
