"""The response cache through real sockets: the openai client -> gearshift -> the fake upstream, traces in
SQLite, and a cache shared through the store (SQLite and a real PostgreSQL)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3
from click.testing import CliRunner

from gearshift.cli import main
from gearshift.gateway.server import running
from gearshift.store.view import TraceView
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config, stored_traces

PW_ENV = "GEARSHIFT_TEST_PGPASSWORD"
SMALL = {"input": 1.0, "output": 2.0}  # gateway_config's price of `small`, per 1M tokens


def cached_config(upstream: FakeUpstream, tmp_path: Path, store: dict[str, Any] | None = None, **cache: Any) -> Any:
    """`cached` (fixed on small, with a response cache) and `plain` (the same without one)."""
    routers = {"cached": {"kind": "fixed", "model": "small", "cache": cache},
               "plain": {"kind": "fixed", "model": "small"}}
    extra = {"store": store} if store else {}
    return gateway_config(upstream.url, tmp_path, routers=routers, server={"open": True}, **extra)


@pytest.fixture
def gateway(upstream: FakeUpstream, tmp_path: Path) -> Iterator[Any]:
    with running(cached_config(upstream, tmp_path)) as gw:
        yield gw


def ask(gw: Any, text: str, router: str = "cached", headers: dict[str, str] | None = None,
        **params: Any) -> tuple[str, dict[str, str]]:
    """One chat completion (temperature 0 unless given): its text and the response headers."""
    params.setdefault("temperature", 0)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=router, messages=[{"role": "user", "content": text}], extra_headers=headers or {}, **params)
    return raw.parse().choices[0].message.content or "", dict(raw.headers)


def ask_stream(gw: Any, text: str, **params: Any) -> tuple[str, dict[str, str]]:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="cached", messages=[{"role": "user", "content": text}], temperature=0, stream=True, **params)
    text_out = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
    return text_out, dict(raw.headers)


def written(gw: Any) -> None:
    """Wait for the shared cache's writes under way."""
    deadline = time.monotonic() + 10
    while gw.gateway.cache.writing and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_repeated_request_is_answered_from_the_cache_with_its_saving(gateway: Any, upstream: FakeUpstream) -> None:
    first, h1 = ask(gateway, "what is two plus two")
    second, h2 = ask(gateway, "what is two plus two")
    assert first == second == "echo: what is two plus two"
    assert (h1["x-gearshift-cache"], h2["x-gearshift-cache"]) == ("miss", "hit")
    assert upstream.count() == 1  # the hit made no upstream call
    assert float(h2["x-gearshift-cost-usd"]) == 0 and "response cache" in h2["x-gearshift-reason"]
    miss, hit = (TraceView.of(t) for t in stored_traces(gateway, 2))
    assert (miss.cache, hit.cache) == ("miss", "hit") and hit.cache_hit
    assert hit.calls == () and hit.cost_usd == 0 and hit.final_model == "small" and hit.answered
    [call] = miss.calls
    expected = (call.input_tokens * SMALL["input"] + call.output_tokens * SMALL["output"]) / 1e6
    assert hit.cache_saved_usd == pytest.approx(expected) and expected > 0
    assert miss.cache_saved_usd == 0


def test_a_hit_is_replayed_as_a_stream_and_a_streamed_answer_is_kept(gateway: Any, upstream: FakeUpstream) -> None:
    ask(gateway, "stream this back")
    text, headers = ask_stream(gateway, "stream this back")
    assert text == "echo: stream this back" and headers["x-gearshift-cache"] == "hit"
    assert upstream.count() == 1
    # A streamed answer, put back together, answers a whole request later.
    streamed, h = ask_stream(gateway, "first streamed")
    assert h["x-gearshift-cache"] == "miss"
    whole, h = ask(gateway, "first streamed")
    assert whole == streamed == "echo: first streamed" and h["x-gearshift-cache"] == "hit"
    assert upstream.count() == 2
    traces = [TraceView.of(t) for t in stored_traces(gateway, 4)]
    assert [(t.cache, t.streamed) for t in traces] == [("miss", False), ("hit", True), ("miss", True), ("hit", False)]


def test_raw_stream_of_a_hit_ends_like_any_stream(gateway: Any) -> None:
    ask(gateway, "raw one")
    r = urllib3.PoolManager().request("POST", gateway.url + "/v1/chat/completions", body=json.dumps(
        {"model": "cached", "stream": True, "temperature": 0, "messages": [{"role": "user", "content": "raw one"}]}),
        headers={"Content-Type": "application/json"})
    lines = [ln for ln in r.data.decode().split("\n") if ln]
    assert r.headers["x-gearshift-cache"] == "hit" and lines[-1] == "data: [DONE]"
    assert lines[-2].startswith(": gearshift cost_usd=0.00000000")


def test_the_client_bypasses_the_cache_with_cache_control(gateway: Any, upstream: FakeUpstream) -> None:
    ask(gateway, "fresh please")
    _, h = ask(gateway, "fresh please", headers={"cache-control": "no-cache"})
    assert h["x-gearshift-cache"] == "bypass" and upstream.count() == 2
    # no-store: not read, and its answer not kept either.
    _, h = ask(gateway, "secret", headers={"Cache-Control": "no-store"})
    assert h["x-gearshift-cache"] == "bypass"
    _, h = ask(gateway, "secret")
    assert h["x-gearshift-cache"] == "miss" and upstream.count() == 4
    _, h = ask(gateway, "secret")
    assert h["x-gearshift-cache"] == "hit" and upstream.count() == 4


def test_sampled_requests_are_not_cached_unless_the_router_says_so(upstream: FakeUpstream, tmp_path: Path) -> None:
    with running(cached_config(upstream, tmp_path)) as gw:
        for params in ({"temperature": 0.7}, {"temperature": None}, {"temperature": 0, "n": 2}):
            for _ in range(2):
                _, h = ask(gw, "roll a die", **params)
                assert h["x-gearshift-cache"] == "skip"
        assert upstream.count() == 6
        _, h = ask(gw, "roll a die", router="plain")
        assert "x-gearshift-cache" not in h  # a router without a cache says nothing
    upstream.clear()
    with running(cached_config(upstream, tmp_path / "any", any_temperature=True)) as gw:
        ask(gw, "roll a die", temperature=0.7)
        _, h = ask(gw, "roll a die", temperature=0.7)
        assert h["x-gearshift-cache"] == "hit" and upstream.count() == 1
        _, h = ask(gw, "roll a die", temperature=0.9)  # another temperature is another request
        assert h["x-gearshift-cache"] == "miss"


def test_the_key_is_the_answer_changing_part_of_the_request(gateway: Any, upstream: FakeUpstream) -> None:
    ask(gateway, "same words", max_tokens=50)
    _, h = ask(gateway, "same words", max_tokens=50, user="someone-else", metadata={"team": "x"})
    assert h["x-gearshift-cache"] == "hit"  # who asks and routing hints do not change the answer
    _, h = ask(gateway, "same words", max_tokens=60)
    assert h["x-gearshift-cache"] == "miss"
    _, h = ask(gateway, "same words", max_tokens=50, seed=7)
    assert h["x-gearshift-cache"] == "miss" and upstream.count() == 3


def test_entries_expire_and_the_least_recently_used_go_past_the_cap(upstream: FakeUpstream, tmp_path: Path) -> None:
    with running(cached_config(upstream, tmp_path, ttl_seconds=60)) as gw:
        now = [1_000.0]
        gw.gateway.cache.clock = lambda: now[0]  # the cache's time, moved by hand: no test waits on the wall clock
        ask(gw, "short lived")
        now[0] += 59
        assert ask(gw, "short lived")[1]["x-gearshift-cache"] == "hit"
        now[0] += 1
        assert ask(gw, "short lived")[1]["x-gearshift-cache"] == "miss"
    with running(cached_config(upstream, tmp_path / "cap", max_entries=2)) as gw:
        for text in ("one", "two", "one", "three"):  # "one" used again: "two" is the least recently used
            ask(gw, text)
        assert ask(gw, "one")[1]["x-gearshift-cache"] == "hit"
        assert ask(gw, "three")[1]["x-gearshift-cache"] == "hit"
        assert ask(gw, "two")[1]["x-gearshift-cache"] == "miss"


def test_failed_and_cut_answers_are_never_kept(gateway: Any, upstream: FakeUpstream) -> None:
    upstream.fail(500, times=1)
    with pytest.raises(openai.InternalServerError):
        ask(gateway, "unlucky")
    assert ask(gateway, "unlucky")[1]["x-gearshift-cache"] == "miss"
    upstream.drop(after=1, times=1)  # the stream breaks after its first chunk
    with contextlib.suppress(openai.APIError):
        ask_stream(gateway, "broken stream")
    assert ask_stream(gateway, "broken stream")[1]["x-gearshift-cache"] == "miss"
    # A stream that asked for logprobs is not kept: put back together, it would answer without them.
    ask_stream(gateway, "with logprobs", logprobs=True)
    assert ask(gateway, "with logprobs", logprobs=True)[1]["x-gearshift-cache"] == "miss"
    assert ask(gateway, "with logprobs", logprobs=True)[1]["x-gearshift-cache"] == "hit"


def test_each_api_gets_its_own_rendering_of_a_hit(gateway: Any, upstream: FakeUpstream) -> None:
    http = urllib3.PoolManager()
    body = {"model": "cached", "max_tokens": 64, "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}
    replies = [http.request("POST", gateway.url + "/v1/messages", body=json.dumps(body),
                            headers={"Content-Type": "application/json"}) for _ in range(2)]
    assert [r.headers["x-gearshift-cache"] for r in replies] == ["miss", "hit"]
    doc = json.loads(replies[1].data)
    assert doc["type"] == "message" and doc["content"][0]["text"] == "echo: hi"
    streamed = http.request("POST", gateway.url + "/v1/messages", body=json.dumps({**body, "stream": True}),
                            headers={"Content-Type": "application/json"})
    assert streamed.headers["x-gearshift-cache"] == "hit" and b"event: message_stop" in streamed.data
    # The same words on chat completions are another API's request.
    assert ask(gateway, "hi", max_tokens=64)[1]["x-gearshift-cache"] == "miss"
    assert upstream.count() == 2
    responses = {"model": "cached", "input": "hello responses", "temperature": 0}
    replies = [http.request("POST", gateway.url + "/v1/responses", body=json.dumps(responses),
                            headers={"Content-Type": "application/json"}) for _ in range(2)]
    assert [r.headers["x-gearshift-cache"] for r in replies] == ["miss", "hit"]
    doc = json.loads(replies[1].data)
    assert doc["object"] == "response" and doc["status"] == "completed"
    assert doc["output"][0]["content"][0]["text"] == "echo: hello responses" and upstream.count() == 3


def test_metrics_count_requests_by_router_and_result(gateway: Any) -> None:
    ask(gateway, "count me")
    ask(gateway, "count me")
    ask(gateway, "count me", headers={"cache-control": "no-cache"})
    text = urllib3.PoolManager().request("GET", gateway.url + "/metrics").data.decode()
    for result, n in (("hit", 1), ("miss", 1), ("bypass", 1)):
        assert f'gearshift_cache_requests_total{{router="cached",result="{result}"}} {n}' in text


def test_traces_summary_counts_the_cache_savings(gateway: Any, tmp_path: Path) -> None:
    ask(gateway, "summarise me")
    ask(gateway, "summarise me")
    ask(gateway, "summarise me")
    hits = [TraceView.of(t) for t in stored_traces(gateway, 3) if t["cache"] == "hit"]
    config = tmp_path / "gs.yaml"
    config.write_text(json.dumps({"models": {"small": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                       "price": SMALL, "rank": 1}},
                                  "store": {"url": f"sqlite:///{tmp_path / 'traces.db'}"}}))
    out = CliRunner().invoke(main, ["traces", "--config", str(config), "--json"])
    assert out.exit_code == 0, out.output
    cache = json.loads(out.stdout)["cache"]
    assert cache["by_result"] == {"miss": 1, "hit": 2} and cache["hit_rate"] == pytest.approx(2 / 3)
    assert cache["saved_usd"] == pytest.approx(sum(t.cache_saved_usd for t in hits)) and cache["saved_usd"] > 0
    printed = CliRunner().invoke(main, ["traces", "--config", str(config)])
    assert "response cache: 2 hits, 1 misses" in printed.stdout


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_shared_cache_answers_every_gateway_on_the_store(backend: str, upstream: FakeUpstream, tmp_path: Path,
                                                           request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        store = {"url": f"sqlite:///{tmp_path / 'shared.db'}", "flush_interval": 0.05}
    else:
        store = {"url": request.getfixturevalue("pg_url"), "password_env": PW_ENV, "flush_interval": 0.05}
    one = cached_config(upstream, tmp_path / "a", store=store, shared=True, max_entries=2)
    two = cached_config(upstream, tmp_path / "b", store=store, shared=True, max_entries=2)
    with running(one) as a, running(two) as b:
        ask(a, "shared question")
        written(a)
        text, h = ask(b, "shared question")  # another gateway (a replica) finds it in the store
        assert h["x-gearshift-cache"] == "hit" and text == "echo: shared question" and upstream.count() == 1
        text, h = ask_stream(b, "shared question")
        assert h["x-gearshift-cache"] == "hit" and text == "echo: shared question"
        for q in ("second", "third"):  # the cap: the oldest written goes
            ask(a, q)
            written(a)
        assert ask(b, "shared question")[1]["x-gearshift-cache"] == "miss"
        written(b)
        assert ask(a, "third")[1]["x-gearshift-cache"] == "hit"
        assert a.gateway.cache.store_failures == b.gateway.cache.store_failures == 0


def test_a_shared_cache_whose_store_is_down_serves_misses(upstream: FakeUpstream, tmp_path: Path, pg_url: str,
                                                          postgres: Any) -> None:
    store = {"url": pg_url, "password_env": PW_ENV, "flush_interval": 0.05}
    with running(cached_config(upstream, tmp_path, store=store, shared=True)) as gw:
        ask(gw, "while it lasts")
        written(gw)
        postgres.accept_connections(pg_url, False)
        try:
            text, h = ask(gw, "while it lasts")  # the store fails: answered upstream, never an error
            assert text == "echo: while it lasts" and h["x-gearshift-cache"] == "miss"
            written(gw)
            assert gw.gateway.cache.store_failures >= 1 and upstream.count() == 2
        finally:
            postgres.accept_connections(pg_url, True)
