"""POST /v1/embeddings: the openai client -> gearshift -> a fake OpenAI-compatible embeddings API, routed
by a fixed router or the model's name, costed from input tokens, traced with endpoint `embeddings`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3

from gearshift.gateway.server import running
from tests.support.configs import parse_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import stored_traces

PRICE = 0.02  # USD per 1M input tokens


@pytest.fixture
def gateway(upstream: FakeUpstream, upstream_key: None, tmp_path: Path) -> Iterator[Any]:
    model = {"api_key_env": "GS_TEST_UPSTREAM_KEY", "retries": 0, "timeout": {"connect": 1, "read": 2}}
    config = parse_config({
        "models": {
            "embed": {"provider": "openai", "upstream_id": "fake-embed", "base_url": upstream.openai_url,
                      "price": {"input": PRICE, "output": 0}, "rank": 1, **model},
            "claude": {"provider": "anthropic", "upstream_id": "fake-claude", "base_url": upstream.anthropic_url,
                       "price": {"input": 3, "output": 15}, "rank": 8, **model},
        },
        "routers": {"gearshift/embed": {"kind": "fixed", "model": "embed"}},
        "store": {"url": f"sqlite:///{tmp_path / 'traces.db'}", "flush_interval": 0.05},
    }, base_dir=tmp_path)
    with running(config) as gw:
        yield gw


def client(gw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)


def test_one_string_through_a_fixed_router_is_costed_and_traced(gateway: Any, upstream: FakeUpstream) -> None:
    raw = client(gateway).embeddings.with_raw_response.create(model="gearshift/embed", input="hello world")
    r = raw.parse()
    assert len(r.data) == 1 and len(r.data[0].embedding) == 8 and r.usage.prompt_tokens == 3
    assert raw.headers["x-gearshift-model"] == "embed" and raw.headers["x-gearshift-router"] == "gearshift/embed"
    assert float(raw.headers["x-gearshift-cost-usd"]) == pytest.approx(3 * PRICE / 1e6)
    sent = upstream.requests[-1]
    assert sent.path == "/v1/embeddings" and sent.json["model"] == "fake-embed" and sent.json["input"] == "hello world"
    [t] = stored_traces(gateway, 1)
    assert t["endpoint"] == "embeddings" and t["final_model"] == "embed" and t["router"] == "gearshift/embed"
    assert t["calls"][0]["input_tokens"] == 3 and t["calls"][0]["cost_usd"] == pytest.approx(3 * PRICE / 1e6)


def test_a_batch_by_model_name(gateway: Any, upstream: FakeUpstream) -> None:
    r = client(gateway).embeddings.create(model="embed", input=["a", "bb", "a"], encoding_format="float")
    assert [d.index for d in r.data] == [0, 1, 2] and r.data[0].embedding == r.data[2].embedding
    assert upstream.requests[-1].json == {"model": "fake-embed", "input": ["a", "bb", "a"], "encoding_format": "float"}


def test_refusals(gateway: Any) -> None:
    http = urllib3.PoolManager()

    def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        r = http.request("POST", gateway.url + "/v1/embeddings", body=json.dumps(body))
        return r.status, json.loads(r.data)["error"]

    status, err = post({"model": "embed", "input": [{"text": "x"}]})
    assert status == 400 and err["param"] == "input"
    status, err = post({"model": "claude", "input": "x"})  # the Messages API has no embeddings
    assert status == 400 and "no embeddings API" in err["message"]
    status, err = post({"model": "nope", "input": "x"})
    assert status == 404 and err["code"] == "model_not_found"
