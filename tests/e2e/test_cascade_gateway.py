"""Cascades through real sockets: accept, escalate, judge gates and the capability rule, latency
budgets, a start router in front, accept=best, and streaming with and without a gate."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3

from gearshift.config import Config
from gearshift.errors import ConfigError
from gearshift.gateway.server import running
from gearshift.gateway.summary import summarise
from gearshift.lab.report import cascade_records_from_traces, summarise_cascade
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config, stored_traces

MATH_GATES = [{"kind": "arithmetic"}, {"kind": "final_answer"}]
GOOD = "Each box holds 4 + 3 = 7 apples, so 2 boxes hold 2 x 7 = 14 apples.\n#### 14"
BAD_ARITHMETIC = "Each box holds 4 + 3 = 8 apples, so 2 boxes hold 2 x 8 = 16 apples.\n#### 16"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream.running(models=("fake-small", "fake-large", "fake-claude")) as up:
        yield up


def cascade_config(upstream: FakeUpstream, tmp_path: Path, **cascade: Any) -> Config:
    spec: dict[str, Any] = {"kind": "cascade", "tiers": [{"model": "small", "gates": MATH_GATES}, {"model": "large"}]}
    spec.update(cascade)
    routers = {
        "gearshift/cascade": spec,
        "gearshift/rules": {"kind": "rules", "default": "small",
                            "rules": [{"name": "vip", "when": {"metadata": {"tier": "pro"}}, "model": "large"}]},
    }
    return gateway_config(upstream.url, tmp_path, routers=routers)


def client(gw) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)


def ask(gw, text: str = "How many apples are in 2 boxes?", headers: dict[str, str] | None = None,  # type: ignore[no-untyped-def]
        **kw: Any):
    return client(gw).chat.completions.with_raw_response.create(
        model="gearshift/cascade", messages=[{"role": "user", "content": text}], extra_headers=headers or {}, **kw)



def roles(trace: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["model"], c["role"]) for c in trace["calls"]]


def test_an_answer_that_passes_is_accepted_at_tier_1(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.reply(GOOD, model="fake-small")
    with running(cascade_config(upstream, tmp_path)) as gw:
        raw = ask(gw)
        [t] = stored_traces(gw, 1)
    assert raw.parse().choices[0].message.content == GOOD
    assert raw.headers["x-gearshift-model"] == "small"
    assert "accepted at tier 1" in raw.headers["x-gearshift-reason"]
    assert upstream.count(model="fake-large") == 0
    assert roles(t) == [("small", "primary"), ("arithmetic", "gate"), ("final_answer", "gate")]
    assert [v["passed"] for v in t["verdicts"]] == [True, True]
    assert t["final_model"] == "small"


def test_a_failing_answer_escalates_and_every_call_is_counted(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.reply(BAD_ARITHMETIC, model="fake-small")
    upstream.reply("There are 14 apples.", model="fake-large")
    with running(cascade_config(upstream, tmp_path)) as gw:
        raw = ask(gw)
        [t] = stored_traces(gw, 1)
    assert raw.parse().choices[0].message.content == "There are 14 apples."
    assert raw.headers["x-gearshift-model"] == "large"
    assert "tier 1 (small) failed arithmetic" in raw.headers["x-gearshift-reason"]
    assert roles(t) == [("small", "primary"), ("arithmetic", "gate"), ("final_answer", "gate"), ("large", "escalation")]
    arithmetic = t["verdicts"][0]
    assert not arithmetic["passed"] and "4 + 3 = 8 does not hold" in " ".join(arithmetic["reasons"])
    # The client pays for the cheap call too, and the header says so.
    small, large = t["calls"][0]["cost_usd"], t["calls"][3]["cost_usd"]
    assert small > 0 and large > 0
    assert float(raw.headers["x-gearshift-cost-usd"]) == pytest.approx(small + large, rel=1e-6)


def test_traces_summary_separates_tier1_from_escalated(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.reply(GOOD, model="fake-small")
    upstream.reply(BAD_ARITHMETIC, model="fake-small")
    upstream.reply(GOOD, model="fake-small")
    config = cascade_config(upstream, tmp_path)
    with running(config) as gw:
        for _ in range(3):
            ask(gw)
        rows = stored_traces(gw, 3)
    s = summarise(rows, config)["cascade"]
    assert s["gated_requests"] == 3
    assert s["escalation_rate"] == pytest.approx(1 / 3)
    assert s["accepted_at_tier1"]["count"] == 2 and s["escalated"]["count"] == 1
    assert s["escalated"]["latency_p50_ms"] is not None
    # The lab report reads the same traces the same way, and counts every call in the spend.
    rec = cascade_records_from_traces(rows, router="gearshift/cascade")
    assert rec is not None
    summary = summarise_cascade(rec, n_boot=50)
    assert summary.tier1.count == 2 and summary.escalated.count == 1
    assert summary.spend == pytest.approx(sum(t["cost_usd"] for t in rows))


def test_accept_best_returns_the_best_scored_answer(upstream: FakeUpstream, tmp_path: Path) -> None:
    half_right = "4 + 3 = 7 and 2 x 7 = 15.\n#### 15"  # one of two equations holds: arithmetic score 0.5
    all_wrong = "4 + 3 = 8 and 2 x 8 = 17.\n#### 17"  # none holds: score 0
    upstream.reply(half_right, model="fake-small")
    upstream.reply(all_wrong, model="fake-large")
    tiers = [{"model": "small", "gates": MATH_GATES}, {"model": "large", "gates": MATH_GATES}]
    with running(cascade_config(upstream, tmp_path, tiers=tiers, accept="best")) as gw:
        raw = ask(gw)
    assert raw.headers["x-gearshift-model"] == "small"
    assert raw.parse().choices[0].message.content == half_right
    assert "no tier passed; best score 0.50" in raw.headers["x-gearshift-reason"]


def test_a_start_router_sends_requests_straight_to_a_later_tier(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = cascade_config(upstream, tmp_path, start={"router": "gearshift/rules"})
    with running(config) as gw:
        raw = ask(gw, headers={"x-gearshift-tier": "pro"})
        [t] = stored_traces(gw, 1)
    assert raw.headers["x-gearshift-model"] == "large"
    assert "start tier 2 (large) by gearshift/rules" in raw.headers["x-gearshift-reason"]
    assert upstream.count(model="fake-small") == 0
    assert roles(t) == [("large", "primary")]


# --- judge gates ------------------------------------------------------------------------------


def test_judge_gate_calls_its_model_and_the_call_is_in_the_trace(upstream: FakeUpstream, tmp_path: Path) -> None:
    tiers = [{"model": "small", "gates": [{"kind": "judge", "model": "large"}]}, {"model": "large"}]
    upstream.reply("Verdict: FAIL", model="fake-large")  # the judge's answer
    upstream.reply("The answer is 14.", model="fake-large")  # the escalation's
    with running(cascade_config(upstream, tmp_path, tiers=tiers)) as gw:
        raw = ask(gw)
        [t] = stored_traces(gw, 1)
    assert raw.headers["x-gearshift-model"] == "large"
    assert raw.parse().choices[0].message.content == "The answer is 14."
    assert roles(t) == [("small", "primary"), ("large", "judge"), ("large", "escalation")]
    judge_call = t["calls"][1]
    assert judge_call["cost_usd"] > 0 and judge_call["response"] == "Verdict: FAIL"
    # The judge saw the question and the cheap answer.
    judged = upstream.requests[1].json["messages"][0]["content"]
    assert "How many apples are in 2 boxes?" in judged and "echo: How many apples" in judged
    assert float(raw.headers["x-gearshift-cost-usd"]) == pytest.approx(sum(c["cost_usd"] for c in t["calls"]), rel=1e-6)


def test_a_failed_judge_call_fails_the_gate_and_escalates(upstream: FakeUpstream, tmp_path: Path) -> None:
    tiers = [{"model": "small", "gates": [{"kind": "judge", "model": "large"}]}, {"model": "large"}]
    upstream.fail(500, model="fake-large")  # the judge's call (large has retries: 0)
    with running(cascade_config(upstream, tmp_path, tiers=tiers)) as gw:
        raw = ask(gw)
        [t] = stored_traces(gw, 1)
    assert raw.headers["x-gearshift-model"] == "large"
    assert roles(t) == [("small", "primary"), ("judge", "gate"), ("large", "escalation")]
    assert t["calls"][1]["status"] == 422
    assert "judge call failed" in " ".join(t["verdicts"][0]["reasons"])


def test_a_judge_weaker_than_the_escalation_model_is_refused_at_config_load(upstream: FakeUpstream,
                                                                             tmp_path: Path) -> None:
    tiers = [{"model": "small", "gates": [{"kind": "judge", "model": "small"}]}, {"model": "large"}]
    with pytest.raises(ConfigError) as e:
        cascade_config(upstream, tmp_path, tiers=tiers)
    msg = str(e.value)
    assert "routers.gearshift/cascade.tiers.0.gates.0.model" in msg
    assert "'small' (rank 1) ranks below 'large' (rank 9)" in msg
    assert "allow_weak_judge: true" in msg


def test_an_allowed_weak_judge_warns_at_every_start(upstream: FakeUpstream, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    tiers = [{"model": "small", "gates": [{"kind": "judge", "model": "claude", "allow_weak_judge": True}]},
             {"model": "large"}]
    config = cascade_config(upstream, tmp_path, tiers=tiers)  # claude ranks 8, below large's 9: allowed
    caplog.clear()  # checking the config warned too (as check-config does); count the starts' warnings
    caplog.set_level(logging.WARNING, logger="gearshift.cascade")
    for _ in range(2):
        with running(config):
            pass
    warnings = [r.getMessage() for r in caplog.records if r.name == "gearshift.cascade"]
    assert len(warnings) == 2
    assert all("weak judge allowed" in w and "'claude' (rank 8)" in w for w in warnings)


# --- latency budgets ---------------------------------------------------------------------------


def test_a_latency_budget_skips_a_tier_that_observed_latencies_say_would_break_it(upstream: FakeUpstream,
                                                                                  tmp_path: Path) -> None:
    upstream.delay(0.3, times=2, model="fake-small", text=GOOD)
    with running(cascade_config(upstream, tmp_path)) as gw:
        for _ in range(2):  # the gateway observes the cheap tier taking >= 300 ms
            assert ask(gw).headers["x-gearshift-model"] == "small"
        raw = ask(gw, headers={"x-gearshift-latency-budget-ms": "250"})
        assert raw.headers["x-gearshift-model"] == "large"
        reason = raw.headers["x-gearshift-reason"]
        assert "latency budget 250ms: skip tier 1 (small): expected" in reason
        # A budget the cheap tier fits keeps it; so does the body's metadata form.
        roomy = ask(gw, headers={"x-gearshift-latency-budget-ms": "60000"})
        assert roomy.headers["x-gearshift-model"] == "small"
        meta = client(gw).chat.completions.with_raw_response.create(
            model="gearshift/cascade", messages=[{"role": "user", "content": "q"}],
            extra_body={"metadata": {"latency_budget_ms": "250"}})
        assert meta.headers["x-gearshift-model"] == "large"
    assert upstream.count(model="fake-small") == 3


def test_a_tier_latency_prior_applies_before_anything_is_observed(upstream: FakeUpstream, tmp_path: Path) -> None:
    tiers = [{"model": "small", "gates": MATH_GATES, "latency_ms": 5000}, {"model": "large", "latency_ms": 2000}]
    with running(cascade_config(upstream, tmp_path, tiers=tiers)) as gw:
        raw = ask(gw, headers={"x-gearshift-latency-budget-ms": "6000"})
    assert raw.headers["x-gearshift-model"] == "large"
    assert "skip tier 1 (small): expected 5000ms + 2000ms after it > 6000ms" in raw.headers["x-gearshift-reason"]


def test_a_malformed_latency_budget_is_a_400(upstream: FakeUpstream, tmp_path: Path) -> None:
    with running(cascade_config(upstream, tmp_path)) as gw, pytest.raises(openai.BadRequestError) as e:
        ask(gw, headers={"x-gearshift-latency-budget-ms": "soon"})
    assert "latency_budget_ms must be a positive number" in str(e.value)


# --- streaming -----------------------------------------------------------------------------------


def stream_raw(gw, headers: dict[str, str] | None = None) -> tuple[dict[str, str], list[dict[str, Any]]]:  # type: ignore[no-untyped-def]
    """The SSE chunks exactly as sent (urllib3: the openai client would merge them)."""
    body = {"model": "gearshift/cascade", "stream": True,
            "messages": [{"role": "user", "content": "How many apples are in 2 boxes?"}]}
    r = urllib3.request("POST", gw.url + "/v1/chat/completions", body=json.dumps(body),
                        headers={"content-type": "application/json", **(headers or {})}, preload_content=True)
    assert r.status == 200, r.data
    chunks = [json.loads(line[6:]) for line in r.data.decode().splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    return dict(r.headers), chunks


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def test_streaming_buffers_a_gated_tier_and_replays_the_accepted_answer(upstream: FakeUpstream,
                                                                        tmp_path: Path) -> None:
    upstream.reply(GOOD, model="fake-small")
    with running(cascade_config(upstream, tmp_path)) as gw:
        headers, chunks = stream_raw(gw)
        [t] = stored_traces(gw, 1)
    assert headers["x-gearshift-model"] == "small"
    assert text_of(chunks) == GOOD
    # Buffered: the whole answer arrives as one content chunk (then the finish chunk).
    assert len([c for c in chunks if c["choices"][0]["delta"].get("content")]) == 1
    assert t["streamed"] and roles(t) == [("small", "primary"), ("arithmetic", "gate"), ("final_answer", "gate")]


def test_streaming_escalation_streams_the_ungated_tier_through(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.reply(BAD_ARITHMETIC, model="fake-small")
    upstream.reply("There are fourteen apples in the two boxes.", model="fake-large")
    with running(cascade_config(upstream, tmp_path)) as gw:
        headers, chunks = stream_raw(gw)
        [t] = stored_traces(gw, 1)
    assert headers["x-gearshift-model"] == "large"
    assert "tier 1 (small) failed arithmetic" in headers["x-gearshift-reason"]
    assert text_of(chunks) == "There are fourteen apples in the two boxes."
    # Streamed through: the upstream's word-by-word chunks reach the client as they come.
    assert len([c for c in chunks if c["choices"][0]["delta"].get("content")]) > 3
    assert roles(t)[-1] == ("large", "escalation") and t["calls"][-1]["cost_usd"] > 0


def test_streaming_without_a_gate_streams_through(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = cascade_config(upstream, tmp_path, start={"router": "gearshift/rules"})
    upstream.reply("Fourteen apples, counted one box at a time.", model="fake-large")
    with running(config) as gw:
        headers, chunks = stream_raw(gw, {"x-gearshift-tier": "pro"})
    assert headers["x-gearshift-model"] == "large"
    assert text_of(chunks) == "Fourteen apples, counted one box at a time."
    assert len([c for c in chunks if c["choices"][0]["delta"].get("content")]) > 3
    assert upstream.count(model="fake-small") == 0


def test_streaming_with_accept_best_replays_the_best_answer(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.reply("4 + 3 = 7 and 2 x 7 = 15.\n#### 15", model="fake-small")
    upstream.reply("4 + 3 = 8 and 2 x 8 = 17.\n#### 17", model="fake-large")
    tiers = [{"model": "small", "gates": MATH_GATES}, {"model": "large", "gates": MATH_GATES}]
    with running(cascade_config(upstream, tmp_path, tiers=tiers, accept="best")) as gw:
        headers, chunks = stream_raw(gw)
    assert headers["x-gearshift-model"] == "small"
    assert text_of(chunks) == "4 + 3 = 7 and 2 x 7 = 15.\n#### 15"


def test_a_learned_gate_scores_online_exactly_as_in_the_lab(upstream: FakeUpstream, tmp_path: Path,
                                                            data_dir: Path) -> None:
    import numpy as np

    from gearshift.gates.learned import LearnedGateModel
    from gearshift.lab.gating import train_learned_gate
    from gearshift.outcomes.datasets import ROUTELLM_STRONG, ROUTELLM_WEAK, load
    from gearshift.request import ChatRequest

    o = load("routellm/gsm8k", drop_contaminated=True)
    train_learned_gate(o, ROUTELLM_WEAK, ROUTELLM_STRONG, rows=np.arange(400), threshold=0.6).save(tmp_path / "gate.json")
    question, answer = str(o.prompts[500]), str(o.responses[500, 0])
    offline = LearnedGateModel.load(tmp_path / "gate.json").score(ChatRequest.from_prompt(question), answer)
    upstream.reply(answer, model="fake-small")
    upstream.reply("GPT-4's answer", model="fake-large")
    tiers = [{"model": "small", "gates": [{"kind": "learned", "artifact": "gate.json"}]}, {"model": "large"}]
    with running(cascade_config(upstream, tmp_path, tiers=tiers)) as gw:
        raw = ask(gw, question)
        [t] = stored_traces(gw, 1)
    [verdict] = t["verdicts"]
    assert verdict["gate"] == "learned" and verdict["score"] == pytest.approx(offline, abs=1e-12)
    assert verdict["passed"] == (offline >= 0.6)
    assert raw.headers["x-gearshift-model"] == ("small" if offline >= 0.6 else "large")


def test_the_example_cascade_online_matches_its_lab_replay(tmp_path: Path, data_dir: Path) -> None:
    """examples/cascade-gsm8k.yaml on replay providers: the gateway escalates exactly the GSM8K
    prompts the lab's replay of the same router escalates, and charges what the lab counts."""
    import numpy as np
    import yaml

    from gearshift.config import parse_config
    from gearshift.lab.replay import replay_cascade
    from gearshift.outcomes.datasets import load
    from gearshift.plan import build_routers

    repo = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((repo / "examples" / "cascade-gsm8k.yaml").read_text())
    doc["store"] = {"url": f"sqlite:///{tmp_path / 'traces.db'}", "flush_interval": 0.05}
    config = parse_config(doc, base_dir=repo / "examples")
    o = load("routellm/gsm8k", drop_contaminated=True).subset(np.arange(0, 1300, 26))  # 50 prompts
    columns = {m: mc.replay.column for m, mc in config.models.items() if mc.replay is not None}
    lab = replay_cascade(build_routers(config)["gearshift/cascade"], o, columns=columns)
    assert 0 < lab.escalated.sum() < len(o)
    with running(config) as gw:
        c = client(gw)
        online = []
        for prompt in o.prompts:
            raw = c.chat.completions.with_raw_response.create(
                model="gearshift/cascade", messages=[{"role": "user", "content": str(prompt)}])
            online.append(raw.headers["x-gearshift-model"] == "gpt-4-1106")
        rows = stored_traces(gw, len(o))
    np.testing.assert_array_equal(np.array(online), lab.escalated)
    # Costs: both price estimated tokens (characters / 4) of every call made; the gateway's request
    # also counts a few tokens of per-message overhead, at most 5 input tokens per call.
    by_prompt = {t["prompt"]: t["cost_usd"] for t in rows}
    gateway_cost = np.array([by_prompt[str(p)] for p in o.prompts])
    overhead = 5 * (0.6 + 10.0 * lab.escalated) / 1e6
    assert (gateway_cost >= lab.cost - 1e-12).all() and (gateway_cost <= lab.cost + overhead).all()


def test_the_gateway_and_the_lab_walk_a_route_alike(upstream: FakeUpstream, tmp_path: Path) -> None:
    """One walk (route.Walk) online and offline: on the same answers, the gateway and the lab's replay
    of the same router pick the same tier, accept="best" included."""
    import numpy as np

    from gearshift.lab.replay import replay_cascade
    from gearshift.outcomes.table import Outcomes
    from gearshift.plan import build_routers

    half_right = "4 + 3 = 7 and 2 x 7 = 15.\n#### 15"  # arithmetic score 0.5
    all_wrong = "4 + 3 = 8 and 2 x 8 = 17.\n#### 17"  # 0
    cases = [(GOOD, all_wrong), (BAD_ARITHMETIC, GOOD), (half_right, all_wrong), (all_wrong, half_right),
             (all_wrong, all_wrong)]
    tiers = [{"model": "small", "gates": MATH_GATES}, {"model": "large", "gates": MATH_GATES}]
    config = cascade_config(upstream, tmp_path, tiers=tiers, accept="best")
    prompts = [f"Question {i}: how many apples are in 2 boxes?" for i in range(len(cases))]
    o = Outcomes(prompts=np.array(prompts, dtype=object), models=["small", "large"], quality=np.ones((len(cases), 2)),
                 cost=np.ones((len(cases), 2)), responses=np.array(cases, dtype=object))
    lab = replay_cascade(build_routers(config)["gearshift/cascade"], o)
    online = []
    with running(config) as gw:
        for prompt, (small, large) in zip(prompts, cases, strict=True):
            upstream.clear()  # an accepted first tier leaves the large model's reply unused
            upstream.reply(small, model="fake-small")
            upstream.reply(large, model="fake-large")
            online.append(ask(gw, prompt).headers["x-gearshift-model"])
    assert online == [o.models[j] for j in lab.choice]
    assert online == ["small", "large", "small", "large", "small"]
