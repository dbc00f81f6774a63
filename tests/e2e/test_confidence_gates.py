"""Confidence gates through real sockets and the official openai SDK: the logprob gate asks the upstream
for token logprobs, accepts confident cheap answers, escalates unconfident ones, and hands the client
logprobs only when it asked; self-consistency samples the cheap model and counts the samples."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gearshift.config import Config
from gearshift.gateway.server import running
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config, stored_traces

GOOD = "Each box holds 7 apples, so 2 boxes hold 14 apples.\n#### 14"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream.running(models=("fake-small", "fake-large")) as up:
        yield up


def config(upstream: FakeUpstream, tmp_path: Path, gates: list[dict[str, Any]]) -> Config:
    spec = {"kind": "cascade", "tiers": [{"model": "small", "gates": gates}, {"model": "large"}]}
    return gateway_config(upstream.url, tmp_path, routers={"gearshift/cascade": spec})


def ask(gw: Any, stream: bool = False, **kw: Any) -> Any:
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    return c.chat.completions.with_raw_response.create(
        model="gearshift/cascade", messages=[{"role": "user", "content": "How many apples in 2 boxes?"}],
        stream=stream, **kw)



def small_requests(upstream: FakeUpstream) -> list[dict[str, Any]]:
    return [r.json for r in upstream.requests if r.model == "fake-small"]


def test_a_confident_cheap_answer_is_accepted_without_logprobs_for_the_client(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.confident(-0.05, GOOD, model="fake-small")
    with running(config(upstream, tmp_path, [{"kind": "logprob", "threshold": 0.8}])) as gw:
        raw = ask(gw)
        [t] = stored_traces(gw, 1)
    answer = raw.parse()
    assert answer.choices[0].message.content == GOOD
    assert raw.headers["x-gearshift-model"] == "small"
    assert answer.choices[0].logprobs is None  # the client did not ask: same body shape as without the gate
    assert '"content":[' not in raw.http_response.text
    [sent] = small_requests(upstream)
    assert sent["logprobs"] is True  # gearshift asked the upstream for the gate
    assert upstream.count(model="fake-large") == 0
    assert t["verdicts"][0]["passed"] and t["verdicts"][0]["score"] > 0.9


def test_an_unconfident_cheap_answer_escalates(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.confident(-1.5, GOOD, model="fake-small")
    upstream.reply("There are 14 apples.", model="fake-large")
    with running(config(upstream, tmp_path, [{"kind": "logprob", "threshold": 0.8}])) as gw:
        raw = ask(gw)
        [t] = stored_traces(gw, 1)
    answer = raw.parse()
    assert answer.choices[0].message.content == "There are 14 apples."
    assert raw.headers["x-gearshift-model"] == "large"
    assert "tier 1 (small) failed logprob" in raw.headers["x-gearshift-reason"]
    assert answer.choices[0].logprobs is None
    # The escalation is the client's own request: no logprobs asked for it.
    [large] = [r.json for r in upstream.requests if r.model == "fake-large"]
    assert "logprobs" not in large
    assert not t["verdicts"][0]["passed"] and t["verdicts"][0]["score"] == pytest.approx(0.2231, abs=1e-3)


def test_a_client_that_asked_for_logprobs_gets_them(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.confident(-0.05, GOOD, model="fake-small")
    with running(config(upstream, tmp_path, [{"kind": "logprob", "threshold": 0.8}])) as gw:
        raw = ask(gw, logprobs=True, top_logprobs=2)
    answer = raw.parse()
    assert raw.headers["x-gearshift-model"] == "small"
    content = answer.choices[0].logprobs.content
    assert "".join(t.token for t in content) == GOOD
    assert all(t.logprob == pytest.approx(-0.05) and len(t.top_logprobs) == 2 for t in content)
    assert small_requests(upstream)[0]["top_logprobs"] == 2


def test_a_streaming_client_gets_the_accepted_answer_without_logprobs(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.confident(-0.05, GOOD, model="fake-small")
    with running(config(upstream, tmp_path, [{"kind": "logprob", "threshold": 0.8}])) as gw:
        chunks = list(ask(gw, stream=True).parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == GOOD
    assert all(c.choices[0].logprobs is None for c in chunks if c.choices)


SC = {"kind": "self_consistency", "model": "small", "k": 3}


def test_self_consistency_accepts_when_the_samples_agree_and_counts_them(upstream: FakeUpstream,
                                                                          tmp_path: Path) -> None:
    upstream.reply(GOOD, model="fake-small")
    upstream.reply("2 x 7 = 14.\nThe answer is 14.", times=2, model="fake-small")
    with running(config(upstream, tmp_path, [SC])) as gw:
        raw = ask(gw, temperature=0)
        [t] = stored_traces(gw, 1)
    assert raw.parse().choices[0].message.content == GOOD
    assert raw.headers["x-gearshift-model"] == "small"
    assert upstream.count(model="fake-small") == 3 and upstream.count(model="fake-large") == 0
    samples = small_requests(upstream)[1:]
    assert all(s["temperature"] == 0.7 for s in samples)  # the samples need some spread
    assert [(c["model"], c["role"]) for c in t["calls"]] == [("small", "primary"), ("small", "gate"), ("small", "gate")]
    assert all(c["cost_usd"] > 0 for c in t["calls"])
    assert t["verdicts"][0]["passed"] and t["verdicts"][0]["score"] == pytest.approx(1.0)
    # The client pays for the samples too.
    assert float(raw.headers["x-gearshift-cost-usd"]) == pytest.approx(sum(c["cost_usd"] for c in t["calls"]), rel=1e-6)


def test_self_consistency_escalates_when_the_samples_disagree(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.reply(GOOD, model="fake-small")
    upstream.reply("#### 15", model="fake-small")
    upstream.reply("#### 16", model="fake-small")
    upstream.reply("There are 14 apples.", model="fake-large")
    with running(config(upstream, tmp_path, [SC])) as gw:
        raw = ask(gw)
        [t] = stored_traces(gw, 1)
    assert raw.headers["x-gearshift-model"] == "large"
    assert "tier 1 (small) failed self_consistency" in raw.headers["x-gearshift-reason"]
    assert [c["role"] for c in t["calls"]] == ["primary", "gate", "gate", "escalation"]
    assert t["verdicts"][0]["score"] == pytest.approx(1 / 3)
    assert float(raw.headers["x-gearshift-cost-usd"]) == pytest.approx(sum(c["cost_usd"] for c in t["calls"]), rel=1e-6)
