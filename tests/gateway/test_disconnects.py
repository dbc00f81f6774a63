"""A client that stalls on a large stream and then closes is a 499 in its trace, with no stack trace."""

from __future__ import annotations

import json
import logging
import socket
import struct
import time

import pytest

from gearshift.gateway.server import running
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config


def stalled_stream(port: int) -> None:
    """Ask for a stream, read none of it until buffers fill, then close with a reset."""
    body = json.dumps({"model": "gearshift/auto", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    time.sleep(2)  # long enough for the send buffers to fill: the gateway waits in drain()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_stalled_then_closed_stream_is_499_without_stack_trace(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("GS_TEST_UPSTREAM_KEY", "sk-up")
    with FakeUpstream.running(models=("fake-small", "fake-large")) as up, \
            running(gateway_config(up.url, tmp_path)) as gw, caplog.at_level(logging.ERROR):
        up.reply(" ".join(f"word{i}" for i in range(100_000)), times=None)
        for _ in range(3):
            stalled_stream(gw.port)
        deadline = time.monotonic() + 30
        rows: list[dict] = []
        while time.monotonic() < deadline:
            rows = list(gw.gateway.store.traces())
            if len(rows) == 3 and not gw.gateway.writer.pending():
                break
            time.sleep(0.1)
    assert [r["status"] for r in rows] == [499] * 3
    assert all(r["error"] == "client closed the connection" for r in rows)
    # The gateway's own records (the fake upstream's server may complain of the stream cut under it).
    ours = [r for r in caplog.records if r.levelno >= logging.ERROR and not r.name.startswith("aiohttp")]
    assert not ours, caplog.text
    assert all(r.exc_info is None for r in caplog.records if r.name.startswith("gearshift"))
