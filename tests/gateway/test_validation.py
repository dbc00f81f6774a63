"""Client mistakes in the body are 400s with OpenAI-style JSON, never a 500 (roles of the wrong type,
deep nesting, fields of the wrong type)."""

from __future__ import annotations

import json

import pytest
import urllib3

from gearshift.gateway.server import running
from gearshift.request import MAX_DEPTH, too_deep
from tests.gateway.test_errors import check_error
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with FakeUpstream.running(models=("fake-small", "fake-large")) as up, \
            running(gateway_config(up.url, tmp_path_factory.mktemp("validation"))) as gw:
        yield gw


http = urllib3.PoolManager()


def post(gw, body: str | bytes):  # type: ignore[no-untyped-def]
    return http.request("POST", gw.url + "/v1/chat/completions", body=body,
                        headers={"Content-Type": "application/json"})


def chat(**kw: object) -> str:
    return json.dumps({"model": "gearshift/auto", "messages": [{"role": "user", "content": "hi"}], **kw})


@pytest.mark.parametrize("role", [["user"], {"a": 1}, 3, None, True])
def test_role_of_the_wrong_type_is_400(gateway, role: object) -> None:
    body = json.dumps({"model": "gearshift/auto", "messages": [{"role": role, "content": "x"}]})
    err = check_error(post(gateway, body), 400, "role")
    assert err["param"] == "messages[0].role"


@pytest.mark.parametrize("message,param", [({"role": "assistant", "content": 5}, "content"),
                                           ({"role": "assistant", "content": "x", "tool_calls": [1]}, "tool_calls"),
                                           ({"role": "assistant", "tool_calls": [{"function": "f"}]}, "tool_calls")])
def test_message_parts_of_the_wrong_type_are_400(gateway, message: dict, param: str) -> None:
    for model in ("gearshift/auto", "claude"):  # the Anthropic translation trusts these types
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}, message]})
        err = check_error(post(gateway, body), 400, param)
        assert err["param"] == f"messages[1].{param}"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 254, 255, 600, 1023])
def test_deep_nesting_is_400(gateway, depth: int) -> None:
    deep = "[" * (depth - 2) + "]" * (depth - 2)  # inside the body object and its `extra` field's list
    body = '{"model": "gearshift/auto", "messages": [{"role": "user", "content": "x"}], "extra": [' + deep + "]}"
    check_error(post(gateway, body), 400, "deeper than")


def test_nesting_at_the_limit_is_served(gateway) -> None:
    deep = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    body = '{"model": "gearshift/auto", "messages": [{"role": "user", "content": "hi"}], "extra": [' + deep + "]}"
    assert post(gateway, body).status == 200


@pytest.mark.parametrize("field,value", [("max_tokens", "10"), ("temperature", "hot"), ("temperature", True),
                                         ("metadata", [1]), ("tools", {"a": 1}), ("tools", [{"type": "function", "function": 1}]),
                                         ("tool_choice", 1), ("parallel_tool_calls", "no"), ("response_format", "json"),
                                         ("n", 1.5), ("user", 7), ("stop", 3)])
def test_known_fields_of_the_wrong_type_are_400(gateway, field: str, value: object) -> None:
    err = check_error(post(gateway, chat(**{field: value})), 400, field)
    assert err["param"] == field


def test_nulls_and_right_types_pass(gateway) -> None:
    assert post(gateway, chat(max_tokens=None, temperature=0, top_p=0.5, metadata={"a": "b"}, stop=["x"])).status == 200


def test_too_deep_counts_only_containers() -> None:
    wide = {"messages": [{"role": "user"} for _ in range(500)]}
    assert not too_deep(json.dumps(wide).encode(), wide)
    deep: list[object] = []
    for _ in range(MAX_DEPTH):
        deep = [deep]
    assert too_deep(json.dumps(deep).encode(), deep)
    assert not too_deep(json.dumps(deep[0]).encode(), deep[0])
    assert not too_deep(b"[" * 100, 5)  # brackets inside a string, a scalar body
