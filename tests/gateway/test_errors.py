"""Every error a client can meet is OpenAI-style JSON with the right status, never a stack trace."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
import urllib3

from gearshift.gateway.server import running
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream.running(models=("fake-small", "fake-large")) as up:
        yield up


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("errors")
    config = gateway_config(upstream.url, tmp, client_keys=[{"name": "app", "key": "client-key-1"},
                                                            {"name": "ops", "key": "client-key-2"}],
                            server={"max_body_bytes": 20_000})
    with running(config) as gw:
        yield gw


http = urllib3.PoolManager()


def post(gw, body: bytes | str, key: str | None = "client-key-1", path: str = "/v1/chat/completions"):  # type: ignore[no-untyped-def]
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return http.request("POST", gw.url + path, body=body, headers=headers)


def check_error(r, status: int, contains: str) -> dict:  # type: ignore[no-untyped-def]
    assert r.status == status, r.data
    assert r.headers["Content-Type"].startswith("application/json")
    body = json.loads(r.data)
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert contains in err["message"]
    assert "Traceback" not in r.data.decode()
    return err


def ok_body(**kw: object) -> str:
    return json.dumps({"model": "gearshift/auto", "messages": [{"role": "user", "content": "hi"}], **kw})


def test_authorised_request_succeeds(gateway) -> None:
    r = post(gateway, ok_body())
    assert r.status == 200 and json.loads(r.data)["choices"][0]["message"]["content"] == "echo: hi"
    assert post(gateway, ok_body(), key="client-key-2").status == 200


def test_401_missing_or_wrong_key(gateway) -> None:
    check_error(post(gateway, ok_body(), key=None), 401, "API key")
    err = check_error(post(gateway, ok_body(), key="client-key-3"), 401, "API key")
    assert err["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_400_bad_json_and_schema(gateway) -> None:
    check_error(post(gateway, "{not json"), 400, "not valid JSON")
    check_error(post(gateway, "[1, 2]"), 400, "JSON object")
    err = check_error(post(gateway, json.dumps({"model": "gearshift/auto"})), 400, "messages")
    assert err["param"] == "messages"
    check_error(post(gateway, json.dumps({"model": "gearshift/auto", "messages": [{"role": "wizard", "content": "x"}]})),
                400, "role")
    check_error(post(gateway, ok_body(stream="yes")), 400, "stream")
    check_error(post(gateway, json.dumps({"messages": [{"role": "user", "content": "x"}]})), 400, "model")


def test_404_unknown_model_and_path(gateway) -> None:
    err = check_error(post(gateway, ok_body(model="gpt-17")), 404, "gpt-17")
    assert err["code"] == "model_not_found" and "gearshift/auto" in err["message"]
    check_error(post(gateway, "{}", path="/v1/completions"), 404, "no route")
    r = http.request("GET", gateway.url + "/nope", headers={"Authorization": "Bearer client-key-1"})
    check_error(r, 404, "no route")


def test_413_body_too_large(gateway) -> None:
    big = ok_body(messages=[{"role": "user", "content": "x" * 50_000}])
    err = check_error(post(gateway, big), 413, "larger than")
    assert err["code"] == "request_too_large"


def test_errors_leave_traces(gateway) -> None:
    post(gateway, ok_body(model="gpt-17"))
    gateway.gateway.writer.close()  # drain (the writer is not used again in this module's last test)
    rows = list(gateway.gateway.store.traces())
    statuses = {r["status"] for r in rows}
    assert {400, 404, 413} <= statuses
    assert 401 not in statuses  # keyless requests are counted in /metrics, not traced (tests/gateway/test_keys.py)
    assert all("client-key" not in json.dumps(r) for r in rows)
