"""The openai-agents SDK's default runner, with its default model class (the Responses API) and a tool,
through gearshift to a chat-completions-only upstream: the agent calls the tool, reads its output and
answers; every model turn is a routed, traced /v1/responses request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from agents import (
    Agent,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from gearshift.gateway.server import running
from tests.support.configs import parse_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import REPO, gateway_config, stored_traces

looked_up: list[str] = []


@function_tool
def lookup(query: str) -> str:
    """Look a word up in the dictionary."""
    looked_up.append(query)
    return f"definition of {query}"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream.running(models=("fake-small", "fake-large", "fake-claude")) as up:
        yield up


@pytest.fixture
def gateway(upstream: FakeUpstream, tmp_path: Path) -> Iterator[Any]:
    set_tracing_disabled(True)  # the SDK would export its own traces to OpenAI
    with running(gateway_config(upstream.url, tmp_path)) as gw:
        yield gw


def agent(gw: Any) -> Agent:
    client = AsyncOpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
    model = OpenAIResponsesModel(model="gearshift/auto", openai_client=client)
    return Agent(name="helper", instructions="Use tools when asked.", tools=[lookup], model=model)


def test_default_runner_calls_a_tool_through_responses(gateway: Any, upstream: FakeUpstream) -> None:
    looked_up.clear()
    result = Runner.run_sync(agent(gateway), "please use lookup for gearshift")
    assert looked_up == ["please use lookup for gearshift"]
    assert result.final_output == "echo: tool result: definition of please use lookup for gearshift"
    # Two model turns, both routed by gearshift/auto to the small model over chat completions.
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions"] * 2
    assert upstream.requests[0].json["messages"][0] == {"role": "system", "content": "Use tools when asked."}
    traces = stored_traces(gateway, 2)
    assert [t["endpoint"] for t in traces] == ["responses", "responses"]
    assert all(t["router"] == "gearshift/auto" and t["final_model"] == "small" for t in traces)


def test_streamed_runner_calls_a_tool_through_responses(gateway: Any) -> None:
    looked_up.clear()

    async def run() -> tuple[str, list[str]]:
        result = Runner.run_streamed(agent(gateway), "please use lookup quickly")
        kinds = [e.type async for e in result.stream_events()]
        return str(result.final_output), kinds

    final, kinds = asyncio.run(run())
    assert looked_up == ["please use lookup quickly"]
    assert final == "echo: tool result: definition of please use lookup quickly"
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    assert all(t["streamed"] for t in stored_traces(gateway, 2))


def test_the_sdk_default_model_on_the_example_config(upstream: FakeUpstream, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/openai-agents.yaml as the README runs it: the SDK's default model and client, named by
    the environment, with the gateway's key; the same key's embeddings through gearshift/embed."""
    data = yaml.safe_load((REPO / "examples" / "openai-agents.yaml").read_text())
    for model in data["models"].values():
        model["base_url"] = upstream.openai_url
    data["store"] = {"url": f"sqlite:///{tmp_path / 'traces.db'}", "flush_interval": 0.05}
    monkeypatch.setenv("GEARSHIFT_CLIENT_KEY", "sk-agents-test")
    monkeypatch.setenv("OPENAI_DEFAULT_MODEL", "gearshift/agent")
    looked_up.clear()
    set_tracing_disabled(True)
    with running(parse_config(data, base_dir=tmp_path)) as gw:
        set_default_openai_client(AsyncOpenAI(base_url=gw.url + "/v1", api_key="sk-agents-test", max_retries=0),
                                  use_for_tracing=False)
        helper = Agent(name="helper", instructions="Use tools when asked.", tools=[lookup])  # no model: the default
        result = Runner.run_sync(helper, "please use lookup for routing")
        vectors = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-agents-test", max_retries=0).embeddings.create(
            model="gearshift/embed", input=["routing", "gateways"])
        traces = stored_traces(gw, 3)
    assert looked_up == ["please use lookup for routing"] and len(vectors.data) == 2
    assert result.final_output == "echo: tool result: definition of please use lookup for routing"
    assert [(t["endpoint"], t["router"], t["final_model"], t["client"]) for t in traces] == [
        ("responses", "gearshift/agent", "llama3-8b", "agents")] * 2 + [
        ("embeddings", "gearshift/embed", "nomic-embed", "agents")]
