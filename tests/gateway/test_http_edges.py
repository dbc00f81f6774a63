"""The HTTP edges: slow request heads are cut off, one IP's connections are capped, malformed heads
and wrong methods get OpenAI-style JSON."""

from __future__ import annotations

import json
import socket
import time

import pytest
import urllib3

from gearshift.gateway.server import running
from tests.gateway.test_errors import check_error
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config

http = urllib3.PoolManager()
BODY = json.dumps({"model": "gearshift/auto", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    mp = pytest.MonkeyPatch()
    mp.setenv("GS_TEST_UPSTREAM_KEY", "sk-up")
    server = {"header_timeout_seconds": 0.5, "max_connections_per_client": 8}
    with FakeUpstream.running(models=("fake-small", "fake-large")) as up, \
            running(gateway_config(up.url, tmp_path_factory.mktemp("edges"), server=server)) as gw:
        yield gw
    mp.undo()


def closed_by_peer(s: socket.socket, within: float = 20.0) -> bool:
    """Whether the server closes the socket (EOF or reset) before `within` seconds pass."""
    s.settimeout(within)
    try:
        return s.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def request(port: int, body: bytes = BODY) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def test_slow_head_is_cut_off(gateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        assert closed_by_peer(s)
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        assert closed_by_peer(s)  # nothing sent at all


def test_slow_head_after_keep_alive_is_cut_off_but_a_slow_body_is_not(gateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        s.sendall(request(gateway.port))
        s.settimeout(10)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(1.0)  # idle keep-alive is not a slow head
        s.sendall(b"POST /v1/chat")
        assert closed_by_peer(s)
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        whole = request(gateway.port)
        head_end = whole.index(b"\r\n\r\n") + 4
        s.sendall(whole[:head_end])
        time.sleep(1.0)  # a slow body is the request handler's business, not the head timeout's
        s.sendall(whole[head_end:])
        s.settimeout(10)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")


def test_connections_per_client_ip_are_capped(gateway) -> None:
    held = [socket.create_connection(("127.0.0.1", gateway.port)) for _ in range(8)]
    try:
        extra = socket.create_connection(("127.0.0.1", gateway.port))
        assert closed_by_peer(extra, within=0.4)  # closed at once, well before the head timeout
        extra.close()
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert http.request("POST", gateway.url + "/v1/chat/completions", body=BODY).status == 200


def test_malformed_and_oversized_heads_get_json(gateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        s.settimeout(10)
        raw = s.recv(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400" and b"application/json" in head.lower()
    assert set(json.loads(body)["error"]) >= {"message", "type", "param", "code"}
    r = http.request("GET", gateway.url + "/health", headers={"X-Big": "x" * 20_000}, retries=False)
    assert 400 <= r.status < 500 and r.headers["Content-Type"].startswith("application/json")
    assert "error" in json.loads(r.data)


def test_wrong_method_on_a_known_path_is_405(gateway) -> None:
    r = http.request("GET", gateway.url + "/v1/chat/completions")
    err = check_error(r, 405, "not allowed")
    assert r.headers["Allow"] == "POST" and err["code"] == "method_not_allowed"
    r = http.request("DELETE", gateway.url + "/metrics")
    check_error(r, 405, "not allowed")
    assert "GET" in r.headers["Allow"]
