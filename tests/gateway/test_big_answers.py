"""Big answers: streamed whole to the client, stored once, cut at store.max_answer_chars and marked."""

from __future__ import annotations

from pathlib import Path

import openai

from gearshift.gateway.server import running
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config, settle

CAP = 10_000


def test_a_big_streamed_answer_reaches_the_client_whole_and_is_stored_capped(tmp_path: Path) -> None:
    answer = " ".join(f"{i:05d}" + "y" * 3994 for i in range(500))  # 2 MB in 500 chunks (one a word)
    with FakeUpstream.running() as upstream:
        upstream.reply(answer, times=None)
        config = gateway_config(upstream.url, tmp_path, store={"url": f"sqlite:///{tmp_path / 't.db'}",
                                                             "flush_interval": 0.05, "max_answer_chars": CAP})
        with running(config) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
            for _ in range(3):
                stream = client.chat.completions.create(model="small", stream=True,
                                                        messages=[{"role": "user", "content": "long, please"}])
                got = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
                assert got == answer
            settle(gw)
            rows = list(gw.gateway.store.traces())
    assert len(rows) == 3
    for r in rows:
        assert r["streamed"] and r["status"] == 200
        assert r["response"] == answer[:CAP] and r["response_truncated"] is True
        [call] = r["calls"]
        assert call["response"] == answer[:CAP] and call["truncated"] is True  # what shadow/lab readers use


def test_a_short_answer_is_stored_whole_and_not_marked(tmp_path: Path) -> None:
    with FakeUpstream.running() as upstream:
        upstream.reply("short answer", times=None)
        config = gateway_config(upstream.url, tmp_path)
        with running(config) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
            client.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
            settle(gw)
            [r] = list(gw.gateway.store.traces())
    assert r["response"] == "short answer" and r["response_truncated"] is False
    assert r["calls"][0]["response"] == "short answer" and r["calls"][0]["truncated"] is False
