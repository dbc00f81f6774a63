"""Disagreement is not loss: a GSM8K shadow pair whose final answers differ is resolved by a judge
that knows the truth (a fake upstream answering from the recorded correctness), so the estimate of
Mixtral's quality no longer counts the pairs where GPT-4 was the one that erred as Mixtral's losses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from gearshift.gateway.server import running
from gearshift.outcomes.datasets import ROUTELLM_STRONG, ROUTELLM_WEAK, from_traces, load
from gearshift.store.view import PairEstimate, TraceView
from gearshift.watch import compute_stats
from tests.support.configs import parse_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import REPO, send, settle

N = 60


@pytest.fixture
def gsm8k(data_dir: Path):  # type: ignore[no-untyped-def]
    return load("routellm/gsm8k").subset(np.arange(N))


def test_disagreements_are_resolved_by_a_judge_after_the_answer(gsm8k, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_TEST_UPSTREAM_KEY", "sk-test-upstream")
    w, s = gsm8k.index(ROUTELLM_WEAK), gsm8k.index(ROUTELLM_STRONG)
    truth = {str(p): (gsm8k.quality[i, w], gsm8k.quality[i, s]) for i, p in enumerate(gsm8k.prompts)}

    def judge(prompt: str) -> str:  # grades each answer from the recorded correctness
        question = prompt.split("[Request]\n", 1)[1].split("\n\n[Answer 1]", 1)[0]
        a, b = truth[question]
        return f"1: {'PASS' if a else 'FAIL'}\n2: {'PASS' if b else 'FAIL'}"

    base = yaml.safe_load((REPO / "examples" / "replay-gsm8k.yaml").read_text())
    with FakeUpstream.running(models=("fake-judge",)) as up:
        up.answer_with(judge, model="fake-judge")
        base["models"]["judge"] = {"provider": "openai", "upstream_id": "fake-judge", "base_url": up.openai_url,
                                   "api_key_env": "GS_TEST_UPSTREAM_KEY", "price": {"input": 10, "output": 30},
                                   "rank": 10}
        base["routers"] = {"gearshift/weak": {
            "kind": "fixed", "model": "mixtral-8x7b",
            "shadow": {"rate": 1.0, "reference": "gpt-4-1106", "compare": "final_answer",
                       "resolve": {"judge": "judge", "rate": 1.0}}}}
        base["store"] = {"url": f"sqlite:///{tmp_path / 'traces.db'}", "flush_interval": 0.05}
        config = parse_config(base, base_dir=tmp_path)
        with running(config) as gw:
            send(gw, [str(p) for p in gsm8k.prompts], "gearshift/weak")
            settle(gw)
            rows = list(gw.gateway.store.traces())
        judged = [r.json["messages"][0]["content"] for r in up.requests]
    views = [TraceView.of(r) for r in rows]
    assert len(views) == N
    disagreed = [v for v in views if v.pairs[0].disagreement]
    assert len(judged) == len(disagreed) > 10  # one judge call per disagreement (rate 1), none for agreements
    for v in views:
        roles = [c.role for c in v.calls]
        assert roles == ["primary", "shadow", "shadow_resolve"] if v in disagreed else ["primary", "shadow"]
        assert v.cost_usd == v.calls[0].cost_usd  # the judge is shadow spend, never the request's
    # Each disagreement carries the judge's grade of both answers, which grade the pair.
    for v in disagreed:
        assert v.pairs[0].resolved == truth[str(v.prompt)]
        assert v.grades == {"mixtral-8x7b": truth[str(v.prompt)][0], "gpt-4-1106": truth[str(v.prompt)][1]}
    # The judge is not told which answer is the reference's.
    assert "reference" not in judged[0].lower() and "strong" not in judged[0].lower()
    est = PairEstimate.of_traces(views)
    assert not est.lower_bound and est.resolved == est.disagreed == len(disagreed)
    agree = N - len(disagreed)
    expected = (agree + sum(truth[str(v.prompt)][0] for v in disagreed)) / (
        agree + sum(truth[str(v.prompt)][1] for v in disagreed))
    assert est.retained == pytest.approx(expected)
    assert est.retained > agree / N  # agreement alone understated Mixtral
    assert compute_stats(rows, reference="gpt-4-1106").quality_retained()[0] == pytest.approx(expected)  # type: ignore[index]
    o = from_traces(rows)
    q = np.nanmean(o.select_models(["mixtral-8x7b", "gpt-4-1106"]).quality, axis=0)
    assert q[0] / q[1] == pytest.approx(expected)


def test_recorded_pairs_grade_each_answer_by_its_own_recorded_quality(gsm8k, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`compare: recorded` knows both answers' correctness: the reference is not right by definition, so a
    prompt GPT-4 got wrong keeps its 0, where the pairwise verdict alone would have graded it 1."""
    w, s = gsm8k.index(ROUTELLM_WEAK), gsm8k.index(ROUTELLM_STRONG)
    truth = {str(p): (gsm8k.quality[i, w], gsm8k.quality[i, s]) for i, p in enumerate(gsm8k.prompts)}
    base = yaml.safe_load((REPO / "examples" / "replay-gsm8k.yaml").read_text())
    base["routers"] = {"gearshift/weak": {"kind": "fixed", "model": "mixtral-8x7b",
                                          "shadow": {"rate": 1.0, "reference": "gpt-4-1106", "compare": "recorded"}}}
    base["store"] = {"url": f"sqlite:///{tmp_path / 'traces.db'}", "flush_interval": 0.05}
    with running(parse_config(base, base_dir=tmp_path)) as gw:
        send(gw, list(truth), "gearshift/weak")
        settle(gw)
        rows = list(gw.gateway.store.traces())
    views = [TraceView.of(r) for r in rows]
    assert len(views) == N and all(v.pairs[0].method == "recorded" for v in views)
    # Not vacuous: these prompts hold pairs where only Mixtral was right, and pairs both got wrong.
    assert {(1.0, 0.0), (0.0, 0.0), (0.0, 1.0), (1.0, 1.0)} <= set(truth.values())
    for v in views:
        assert v.grades == {"mixtral-8x7b": truth[str(v.prompt)][0], "gpt-4-1106": truth[str(v.prompt)][1]}
        assert v.pairs[0].passed == (truth[str(v.prompt)][0] >= truth[str(v.prompt)][1])  # the verdict is still pairwise
    o = from_traces(rows).select_models(["mixtral-8x7b", "gpt-4-1106"])
    assert {str(p): tuple(q) for p, q in zip(o.prompts, o.quality, strict=True)} == truth
