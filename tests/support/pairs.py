"""Shadow pairs as the gateway stores them: from the recorded GSM8K answers, and scored pair traces in a store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from gearshift.config import load_config
from gearshift.gateway.compare import compare
from gearshift.lab.train import TrainSettings, fit
from gearshift.learned import artifact
from gearshift.outcomes.datasets import ROUTELLM_STRONG, ROUTELLM_WEAK, load
from gearshift.outcomes.datasets import ROUTELLM_STRONG as S
from gearshift.outcomes.datasets import ROUTELLM_WEAK as W
from gearshift.outcomes.table import Outcomes
from gearshift.request import ChatRequest
from gearshift.store import open_store
from gearshift.store.view import SHADOW_RESOLUTION
from gearshift.trace import Call, Trace
from tests.support.gateway_helpers import replay_config_file


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


def gsm8k_outcomes() -> Outcomes:
    """GSM8K's uncontaminated prompts, Mixtral and GPT-4 (weak, strong)."""
    return load("routellm/gsm8k", drop_contaminated=True).select_models([W, S])


def gsm8k(n: int, seed: int = 0) -> Outcomes:
    o = gsm8k_outcomes()
    return o.subset(np.sort(np.random.default_rng(seed).choice(len(o), n, replace=False)))


def shuffled(o: Outcomes, seed: int = 7) -> Outcomes:
    """The same prompts with another prompt's qualities (both models' together): no signal to learn."""
    perm = np.random.default_rng(seed).permutation(len(o))
    return replace(o, quality=np.asarray(o.quality)[perm], name=f"{o.name} (shuffled)")


def pair_trace(router: str, prompt: str, q_weak: float, q_strong: float) -> Trace:
    """A served answer from the weak model with its shadow from the strong one, both graded."""
    weak, strong = "mixtral-8x7b", "gpt-4-1106"
    return Trace(router=router, requested_model=router, prompt=prompt, final_model=weak, shadowed=True,
                 calls=[Call(model=weak, role="primary", cost_usd=0.0001, latency_ms=10.0, response="a"),
                        Call(model=strong, role="shadow", cost_usd=0.002, latency_ms=10.0, response="b")],
                 verdicts=[{"gate": "shadow_agreement", "model": weak, "score": q_weak, "passed": q_weak >= 0.5},
                           {"gate": "shadow_reference", "model": strong, "score": q_strong, "passed": True}])


def stored_pairs(tmp_path: Path, labels: str, threshold: float, **router: object):  # type: ignore[no-untyped-def]
    """A gateway config whose classifier is trained on 600 GSM8K prompts and a store holding 400 scored
    pairs of other GSM8K prompts; labels 'shuffled' shuffles both the training and the live qualities,
    'prior-shuffled' the training ones only (a configured model without signal on traffic that has some)."""
    o = gsm8k(1000, seed=2)
    train, live = o.subset(np.arange(600)), o.subset(np.arange(600, 1000))
    if labels in ("shuffled", "prior-shuffled"):
        train = shuffled(train)
    if labels == "shuffled":
        live = shuffled(live, seed=3)
    artifact.save(fit(train, TrainSettings()), tmp_path / "router.json")
    path = replay_config_file(tmp_path, {"gearshift/smart": {"kind": "classifier", "artifact": "router.json",
                                                             "threshold": threshold, **router}})
    config = load_config(path)
    store = open_store(config.store, config.base_dir)
    store.write([pair_trace("gearshift/smart", str(p), float(q[0]), float(q[1]))
                 for p, q in zip(live.prompts, np.asarray(live.quality), strict=True)])
    return path, config, store
