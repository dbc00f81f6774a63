"""Upstreams that answer with something other than the API: invalid JSON, a proxy's HTML page, a
truncated stream. The client gets a clean OpenAI-style error (or the fallback's answer), never a 500."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import urllib3

from gearshift.gateway.server import running
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config

HTML = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"
CASES = {
    "invalid JSON, 200": (b'{"id": "chatcmpl-1", "choices": [', 200, "application/json"),
    "HTML error page, 502": (HTML, 502, "text/html"),
    "HTML under 200": (HTML, 200, "text/html"),
    "empty 200": (b"", 200, "application/json"),
    "JSON that is not a completion": (b'{"hello": "world"}', 200, "application/json"),
}


@pytest.fixture
def upstream():  # type: ignore[no-untyped-def]
    with FakeUpstream.running(models=("fake-small", "fake-large", "fake-claude")) as up:
        yield up


def post(url: str, body: dict) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = urllib3.PoolManager().request("POST", url + "/v1/chat/completions", body=json.dumps(body),
                                      headers={"Content-Type": "application/json", "Authorization": "Bearer x"},
                                      retries=False)
    return r.status, json.loads(r.data)


@pytest.mark.parametrize("case", sorted(CASES))
def test_garbage_from_the_upstream_is_a_clean_502_or_the_fallback(upstream: FakeUpstream, tmp_path: Path,
                                                                   case: str) -> None:
    body, status, ctype = CASES[case]
    with running(gateway_config(upstream.url, tmp_path)) as gw:
        upstream.raw(body, status=status, content_type=ctype, times=None, model="fake-small")
        got, answer = post(gw.url, {"model": "small", "messages": [{"role": "user", "content": "hi"}]})
        assert got in (502, 504), (case, got, answer)
        assert set(answer) == {"error"} and answer["error"]["type"] == "upstream_error"
        assert "Traceback" not in json.dumps(answer) and "<html>" not in answer["error"]["message"]
        # A router with a fallback answers from it.
        got, answer = post(gw.url, {"model": "gearshift/auto", "messages": [{"role": "user", "content": "hi"}]})
    assert got == 200 and answer["choices"][0]["message"]["content"] == "echo: hi", (case, answer)
