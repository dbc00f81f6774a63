"""Shadow routing, A/B splits and feedback through real sockets."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3

from gearshift.errors import ConfigError
from gearshift.gateway.server import running
from gearshift.outcomes.datasets import from_traces
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream.running(models=("fake-small", "fake-large", "fake-claude")) as up:
        yield up


def shadow_config(upstream: FakeUpstream, tmp_path: Path, shadow: dict[str, Any], **server: Any):  # type: ignore[no-untyped-def]
    routers = {
        "gearshift/auto": {"kind": "rules", "default": "small", "rules": [], "shadow": shadow},
        "gearshift/strong": {"kind": "fixed", "model": "large"},
        "gearshift/ab": {"kind": "split", "arms": {"gearshift/auto": 1, "gearshift/strong": 1}, "sticky": "user"},
    }
    return gateway_config(upstream.url, tmp_path, routers=routers, server=server or {})


def ask(gw, text: str = "hi", model: str = "gearshift/auto", **kw: Any):  # type: ignore[no-untyped-def]
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    return c.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def wait_for(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def flushed(gw) -> list[dict]:  # type: ignore[no-untyped-def]
    wait_for(lambda: gw.gateway.shadower.queue.qsize() == 0 and gw.gateway.writer.pending() == 0)
    time.sleep(0.3)
    return list(gw.gateway.store.traces())


def test_shadow_runs_after_the_response_and_never_changes_it(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.delay(1.0, model="fake-large", text="The answer is 42.")
    with running(shadow_config(upstream, tmp_path, {"rate": 1.0})) as gw:
        raw = ask(gw, "what is six times seven")
        # The client already has the cheap answer while the reference is still thinking.
        assert raw.parse().choices[0].message.content == "echo: what is six times seven"
        assert raw.headers["x-gearshift-model"] == "small"
        assert gw.gateway.shadower.done == 0
        wait_for(lambda: gw.gateway.shadower.done == 1)
        [t] = flushed(gw)
        wait_for(lambda: gw.gateway.writer.updated == 1)
        health = json.loads(urllib3.PoolManager().request("GET", gw.url + "/health").data)
    # One request, written once, then its shadow pair added: one trace, not two.
    assert health["traces_written"] == 1 and health["traces_updated"] == 1
    assert t["shadowed"]
    roles = [(c["model"], c["role"]) for c in t["calls"]]
    assert roles == [("small", "primary"), ("large", "shadow")]
    assert t["calls"][1]["response"] == "The answer is 42."
    assert t["response"] == "echo: what is six times seven"  # the stored answer is still the client's
    # "six times seven" has no final number: auto comparison leaves a free-text pair unscored without a judge.
    assert not [v for v in t["verdicts"] if v["gate"] == "shadow_agreement"]


def test_failing_reference_never_affects_the_client(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.fail(500, times=None, model="fake-large")
    with running(shadow_config(upstream, tmp_path, {"rate": 1.0})) as gw:
        for i in range(3):
            assert ask(gw, f"q{i}").http_response.status_code == 200
        wait_for(lambda: gw.gateway.shadower.done == 3)
        rows = flushed(gw)
    assert all(r["status"] == 200 for r in rows)
    assert all(r["calls"][-1]["role"] == "shadow" and r["calls"][-1]["status"] == 500 for r in rows)


def test_full_queue_drops_and_counts(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.delay(1.0, times=None, model="fake-large")
    config = shadow_config(upstream, tmp_path, {"rate": 1.0}, shadow_queue_size=1, shadow_workers=1)
    with running(config) as gw:
        for i in range(6):
            assert ask(gw, f"q{i}").http_response.status_code == 200
        dropped = gw.gateway.shadower.dropped["queue_full"]
        health = json.loads(urllib3.request("GET", gw.url + "/health").data)
    # One in flight, one waiting; the rest were dropped rather than waited for.
    assert dropped >= 3
    assert health["shadow"]["dropped"]["queue_full"] == dropped


def test_daily_budget_stops_shadowing(upstream: FakeUpstream, tmp_path: Path) -> None:
    with running(shadow_config(upstream, tmp_path, {"rate": 1.0, "daily_budget_usd": 1e-9})) as gw:
        ask(gw, "first")
        wait_for(lambda: gw.gateway.shadower.done == 1)
        for i in range(3):
            ask(gw, f"later {i}")
        assert gw.gateway.shadower.dropped["budget"] == 3
        assert gw.gateway.shadower.spent_today() > 1e-9
        rows = flushed(gw)
    assert sum(1 for r in rows for c in r["calls"] if c["role"] == "shadow") == 1


def test_daily_budgets_are_per_router_and_survive_a_restart(upstream: FakeUpstream, tmp_path: Path) -> None:
    tiny = {"rate": 1.0, "daily_budget_usd": 1e-9}
    routers = {"gearshift/a": {"kind": "rules", "default": "small", "rules": [], "shadow": tiny},
               "gearshift/b": {"kind": "rules", "default": "small", "rules": [], "shadow": tiny}}
    config = gateway_config(upstream.url, tmp_path, routers=routers)
    with running(config) as gw:
        sh = gw.gateway.shadower
        ask(gw, "first", model="gearshift/a")
        wait_for(lambda: sh.done == 1)
        ask(gw, "again", model="gearshift/a")
        assert sh.dropped["budget"] == 1
        # Router a's spending is not router b's: b still gets its first shadow.
        ask(gw, "first", model="gearshift/b")
        wait_for(lambda: sh.done == 2)
        assert sh.spent_today("gearshift/a") > 0 and sh.spent_today("gearshift/b") > 0
        spent = sh.spent_today()
        health = urllib3.request("GET", gw.url + "/health").json()["shadow"]
        assert health["spent_today_usd_by_router"] == {"gearshift/a": sh.spent_today("gearshift/a"),
                                                       "gearshift/b": sh.spent_today("gearshift/b")}
        flushed(gw)
    # A restart reads today's spend back from the store: both budgets stay spent.
    with running(config) as gw:
        sh = gw.gateway.shadower
        assert sh.spent_today() == pytest.approx(spent)
        for model in ("gearshift/a", "gearshift/b"):
            ask(gw, "after restart", model=model)
        assert sh.dropped["budget"] == 2
        rows = flushed(gw)
    assert sum(1 for r in rows for c in r["calls"] if c["role"] == "shadow") == 2


def test_scored_pairs_become_outcomes(upstream: FakeUpstream, tmp_path: Path) -> None:
    # Reference answers mark a final number; the cheap answers agree on one prompt, not the other.
    upstream.reply("Work... #### 12", model="fake-large")
    upstream.reply("Work... #### 7", model="fake-large")
    with running(shadow_config(upstream, tmp_path, {"rate": 1.0})) as gw:
        upstream.reply("So the answer is 12.", model="fake-small")
        ask(gw, "twelve?")
        wait_for(lambda: gw.gateway.shadower.done == 1)
        upstream.reply("The answer is 8", model="fake-small")
        ask(gw, "seven?")
        wait_for(lambda: gw.gateway.shadower.done == 2)
        rows = flushed(gw)
    agreement = {r["prompt"]: [v for v in r["verdicts"] if v["gate"] == "shadow_agreement"][0] for r in rows}
    assert agreement["twelve?"]["passed"] and agreement["twelve?"]["method"] == "final_answer"
    assert not agreement["seven?"]["passed"]
    o = from_traces(rows)
    assert o.models == ["large", "small"]
    q = {p: tuple(o.quality[i]) for i, p in enumerate(o.prompts)}
    assert q == {"twelve?": (1.0, 1.0), "seven?": (1.0, 0.0)}


def test_pairwise_judge_scores_free_text(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.reply("Paris is the capital of France.", model="fake-large")
    upstream.reply("PASS", model="fake-large")  # the judge (also the large model) grades the pair
    with running(shadow_config(upstream, tmp_path, {"rate": 1.0, "judge": "large"})) as gw:
        ask(gw, "capital of France?")
        wait_for(lambda: gw.gateway.shadower.done == 1)
        [t] = flushed(gw)
    assert [c["role"] for c in t["calls"]] == ["primary", "shadow", "shadow_judge"]
    assert t["shadow_cost_usd"] > 0 and t["cost_usd"] == t["calls"][0]["cost_usd"]  # shadow paid apart
    [v] = [v for v in t["verdicts"] if v["gate"] == "shadow_agreement"]
    assert v["method"] == "judge" and v["passed"] and v["score"] == 1.0
    judge_prompt = upstream.requests[-1].json["messages"][0]["content"]
    assert "Paris is the capital of France." in judge_prompt and "echo: capital of France?" in judge_prompt


def test_weak_shadow_judge_is_refused(upstream: FakeUpstream, tmp_path: Path) -> None:
    # Refused when the config is checked (as `check-config` does), before any gateway starts;
    # tests/test_plan.py shows `serve` and a Gateway built from a Config refuse it alike.
    with pytest.raises(ConfigError, match="allow_weak_judge"):
        shadow_config(upstream, tmp_path, {"rate": 1.0, "judge": "small"})


def test_ab_split_is_sticky_per_user(upstream: FakeUpstream, tmp_path: Path) -> None:
    with running(shadow_config(upstream, tmp_path, {"rate": 0.0})) as gw:
        arms: dict[str, set[str]] = {}
        for user in range(16):
            for i in range(3):
                raw = ask(gw, f"question {i}", model="gearshift/ab", user=f"user-{user}")
                assert raw.headers["x-gearshift-router"] == "gearshift/ab"
                arms.setdefault(f"user-{user}", set()).add(raw.headers["x-gearshift-model"])
        rows = flushed(gw)
    assert all(len(models) == 1 for models in arms.values())  # sticky
    assert {m for ms in arms.values() for m in ms} == {"small", "large"}  # both arms get traffic
    assert {r["arm"] for r in rows} == {"gearshift/auto", "gearshift/strong"}


def test_feedback_round_trip(upstream: FakeUpstream, tmp_path: Path) -> None:
    http = urllib3.PoolManager()
    with running(shadow_config(upstream, tmp_path, {"rate": 0.0})) as gw:
        trace_id = ask(gw).headers["x-gearshift-trace-id"]

        def post(body: dict) -> urllib3.BaseHTTPResponse:
            return http.request("POST", gw.url + "/v1/feedback", body=json.dumps(body),
                                headers={"Content-Type": "application/json"})

        assert post({"trace_id": trace_id, "thumbs": "up", "source": "app"}).status == 200
        assert post({"trace_id": trace_id, "rating": 2, "scale": 5}).status == 200
        r = post({"trace_id": "nope", "score": 1})
        assert r.status == 404 and json.loads(r.data)["error"]["code"] == "trace_not_found"
        assert post({"trace_id": trace_id, "score": 3}).status == 400
        assert post({"trace_id": trace_id, "score": 1, "thumbs": "up"}).status == 400
        fb = gw.gateway.store.feedback()
    # A repeat replaces the earlier judgement of the same answer.
    assert [(f["trace_id"], f["score"], f["label"]) for f in fb] == [(trace_id, 0.25, "2/5")]


def test_feedback_only_from_the_key_that_asked_or_an_admin(upstream: FakeUpstream, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    keys = {"alice": "key-alice-0123456789", "bob": "key-bob-0123456789", "ops": "key-ops-0123456789"}
    for name, secret in keys.items():
        monkeypatch.setenv(f"GS_KEY_{name.upper()}", secret)
    config = gateway_config(upstream.url, tmp_path, client_keys=[
        {"name": "alice", "key_env": "GS_KEY_ALICE"}, {"name": "bob", "key_env": "GS_KEY_BOB"},
        {"name": "ops", "key_env": "GS_KEY_OPS", "admin": True}])
    http = urllib3.PoolManager()
    with running(config) as gw:
        c = openai.OpenAI(base_url=gw.url + "/v1", api_key=keys["alice"], max_retries=0)
        trace_id = c.chat.completions.with_raw_response.create(
            model="gearshift/auto", messages=[{"role": "user", "content": "hi"}]).headers["x-gearshift-trace-id"]

        def post(who: str, score: float) -> urllib3.BaseHTTPResponse:
            return http.request("POST", gw.url + "/v1/feedback", body=json.dumps({"trace_id": trace_id, "score": score}),
                                headers={"Content-Type": "application/json", "Authorization": f"Bearer {keys[who]}"})

        r = post("bob", 0.0)  # another tenant's key
        assert r.status == 403 and json.loads(r.data)["error"]["code"] == "forbidden"
        assert post("alice", 0.5).status == 200
        wait_for(lambda: gw.gateway.store.has_trace(trace_id))
        gw.gateway.recent.clear()  # the owner is now read from the stored trace
        assert post("bob", 0.0).status == 403
        assert post("ops", 1.0).status == 200
        fb = gw.gateway.store.feedback()
    assert [(f["score"], f["client"]) for f in fb] == [(1.0, "ops")]


def test_a_budget_shared_by_two_gateways_holds_in_a_burst(upstream: FakeUpstream, tmp_path: Path) -> None:
    # Reservations, not after-the-fact sync: both gateways see each other's reservations at once.
    # One shadow pair here: ~15 input tokens and the served answer's length at large's 10/30 per 1M.
    from concurrent.futures import ThreadPoolExecutor

    budget = 0.0015
    config = shadow_config(upstream, tmp_path, {"rate": 1.0, "daily_budget_usd": budget})
    with running(config) as a, running(config) as b:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: ask((a, b)[i % 2], f"burst question number {i} " * 3), range(60)))
        for gw in (a, b):
            flushed(gw)
        store = a.gateway.store
        rows = list(store.traces())
        costs = [c["cost_usd"] for r in rows for c in r["calls"] if c["role"] == "shadow"]
        dropped = a.gateway.shadower.dropped["budget"] + b.gateway.shadower.dropped["budget"]
        done = a.gateway.shadower.done + b.gateway.shadower.done
    assert costs and dropped > 0 and done == len(costs) and done + dropped == 60
    print(f"shadow pairs {done}, dropped {dropped}, spent {sum(costs):.6f} of {budget} (one call <= {max(costs):.6f})")
    assert sum(costs) <= budget + max(costs)
