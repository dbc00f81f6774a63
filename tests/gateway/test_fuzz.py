"""Fuzzed request bodies against one running gateway: never a 5xx of our own making (502/504 are the
upstream path's), always OpenAI-style error JSON, and the server still up after."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gearshift.gateway.server import running
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config

BATCH = 50  # bodies per hypothesis example: one example's overhead is paid per 50 requests
EXAMPLES = 100  # 100 x 50 = 5,000 bodies per run
UPSTREAM_STATUSES = {502, 503, 504}  # the upstream failed, or its circuit breaker opened after it did


@pytest.fixture(scope="module", autouse=True)
def _upstream_key() -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    mp.setenv("GS_TEST_UPSTREAM_KEY", "sk-fuzz")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[urllib3.HTTPConnectionPool]:
    with FakeUpstream.running(models=("fake-small", "fake-large", "fake-claude")) as up, \
            running(gateway_config(up.url, tmp_path_factory.mktemp("fuzz"))) as gw, \
            urllib3.HTTPConnectionPool("127.0.0.1", gw.port, maxsize=1, retries=False, timeout=30) as pool:
        yield pool  # one keep-alive connection: thousands of requests without a connect each


odd_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "\u0000", "\ufeff", "\u202e", "\U0001f600" * 20, "\\ud800", "é" * 100, "\r\n", "null"]),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    odd_text)
json_values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                           st.dictionaries(odd_text, kids, max_size=4)),
                           max_leaves=12)

FIELDS = ["model", "messages", "stream", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
          "metadata", "response_format", "tools", "tool_choice", "stream_options", "user", "stop", "seed"]


@st.composite
def near_valid(draw: st.DrawFn) -> Any:
    """A well-formed chat body with some fields (or parts of messages) swapped for any JSON value."""
    message: dict[str, Any] = {"role": draw(st.sampled_from(["user", "system", "assistant", "tool"])),
                               "content": draw(st.one_of(odd_text, json_values))}
    if draw(st.booleans()):
        message[draw(st.sampled_from(["role", "content", "name", "tool_calls"]))] = draw(json_values)
    body: dict[str, Any] = {"model": draw(st.sampled_from(["gearshift/auto", "gearshift/strong", "small", "claude"])),
                            "messages": [message] * draw(st.integers(1, 3))}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        body[name] = draw(json_values)
    if draw(st.integers(0, 4)) == 0:
        body["stream"] = True
    return body


def deep(depth: int, kind: str) -> str:
    inner = "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth
    return '{"model": "gearshift/auto", "messages": [{"role": "user", "content": "x"}], "extra": ' + inner + "}"


raw_bodies = st.one_of(
    st.builds(deep, st.integers(1, 1100), st.sampled_from(["list", "dict"])),
    st.sampled_from(["", "{", "[]", "1" * 500, "1e999", "-1e400", "18446744073709551616", "NaN", "\"\\ud800\"",
                     '{"model": "gearshift/auto", "messages": [{"role": "user", "content": "\\udfff"}]}',
                     '{"messages": [{"role": "user", "content": 1e400}], "model": "small"}']),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)
bodies = st.one_of(
    near_valid().map(json.dumps),
    json_values.map(json.dumps),
    raw_bodies,
)


def check(status: int, headers: Any, data: bytes, body: str) -> None:
    assert status < 500 or status in UPSTREAM_STATUSES, (status, body[:300], data[:300])
    if status == 200:
        return
    assert headers.get("Content-Type", "").startswith("application/json"), (status, body[:300], data[:300])
    err = json.loads(data)["error"]
    assert set(err) >= {"message", "type", "param", "code"}, data[:300]
    assert "Traceback" not in data.decode()


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(batch=st.lists(bodies, min_size=BATCH, max_size=BATCH))
def test_fuzzed_bodies_never_get_a_5xx_of_ours(pool: urllib3.HTTPConnectionPool, batch: list[str]) -> None:
    for body in batch:
        r = pool.request("POST", "/v1/chat/completions", body=body.encode("utf-8", "surrogatepass"),
                         headers={"Content-Type": "application/json"})
        check(r.status, r.headers, r.data, body)


def test_server_is_up_after_the_fuzz(pool: urllib3.HTTPConnectionPool) -> None:
    r = pool.request("GET", "/health")
    assert r.status == 200 and json.loads(r.data)["status"] == "ok"
