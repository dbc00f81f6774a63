"""Routing hints stay in the gateway: the request's `metadata` reaches no upstream unless a model
forwards it, and then without the keys gearshift's routers read."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from gearshift.config import RouterConfig
from gearshift.gateway.server import running
from gearshift.request import ChatRequest, strip_metadata
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config

HINTS = {"tier": "pro", "quality": "high", "task": "math", "user": "u1", "latency_budget_ms": "900",
         "team": "billing", "app": "invoices"}


pytestmark = pytest.mark.usefixtures("upstream_key")


def test_metadata_is_not_forwarded_by_default(upstream: FakeUpstream, tmp_path: Path) -> None:
    with running(gateway_config(upstream.url, tmp_path)) as gw:
        c = openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(
            model="gearshift/auto", messages=[{"role": "user", "content": "hi"}], metadata=HINTS)
        assert raw.headers["x-gearshift-model"] == "large"  # the tier hint still routed
        c.chat.completions.create(model="gearshift/auto", messages=[{"role": "user", "content": "hi"}],
                                  metadata=HINTS, stream=True).close()
        c.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], metadata=HINTS)
    assert len(upstream.requests) == 3
    for rec in upstream.requests:
        assert "metadata" not in rec.json, rec.path


def test_forwarded_metadata_loses_the_routing_keys(upstream: FakeUpstream, tmp_path: Path) -> None:
    cfg = gateway_config(upstream.url, tmp_path)
    cfg.models["large"] = cfg.models["large"].model_copy(update={"forward_metadata": True})
    # A rule on a key of the operator's own choosing makes that key a routing hint too.
    cfg.routers["gearshift/team"] = RouterConfig.model_validate(
        {"kind": "rules", "default": "small", "rules": [{"when": {"metadata": {"team": "billing"}}, "model": "large"}]})
    with running(cfg) as gw:
        c = openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(
            model="gearshift/team", messages=[{"role": "user", "content": "hi"}], metadata=HINTS)
        assert raw.headers["x-gearshift-model"] == "large"
        assert upstream.requests[-1].json["metadata"] == {"app": "invoices"}
        c.chat.completions.create(model="large", messages=[{"role": "user", "content": "hi"}],
                                  metadata={"tier": "free"})
        assert "metadata" not in upstream.requests[-1].json  # nothing left to forward


def test_strip_metadata_works_on_the_copy() -> None:
    req = ChatRequest.from_http({"messages": [], "metadata": {"tier": "pro", "app": "x"}})
    body = req.with_model("m")
    strip_metadata(body, forward=True)
    assert body["metadata"] == {"app": "x"} and req.body["metadata"] == {"tier": "pro", "app": "x"}
    strip_metadata(body, forward=False)
    assert "metadata" not in body
