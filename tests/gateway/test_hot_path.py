"""The request path's shortcuts keep what clients see: the upstream's answer bytes pass through
(retries and fallbacks after a failed first try are in test_app.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from aiohttp import web

from gearshift.gateway.server import running
from tests.support.gateway_helpers import gateway_config

# Pretty-printed, with escapes a re-encode would rewrite: only a pass-through keeps these bytes.
ANSWER = (b'{\n  "id": "chatcmpl-x", "object": "chat.completion", "created": 1700000000, "model": "fake-small",\n'
          b'  "choices": [{"index": 0, "message": {"role": "assistant", "content": "caf\\u00e9 \\/ ok"},'
          b' "finish_reason": "stop"}],\n  "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}\n}')


@pytest.fixture
def upstream() -> Iterator[str]:
    """An upstream answering every chat completion with ANSWER, byte for byte."""

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_the_upstream_answer_reaches_the_client_byte_for_byte(upstream: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_TEST_UPSTREAM_KEY", "sk-test")
    with running(gateway_config(upstream, tmp_path)) as gw:
        r = urllib3.request("POST", f"{gw.url}/v1/chat/completions",
                            json={"model": "gearshift/auto", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 200 and r.data == ANSWER
    assert r.headers["x-gearshift-model"] == "small"
    assert r.headers["x-gearshift-cost-usd"] == f"{(5 * 1.0 + 2 * 2.0) / 1e6:.8f}"
