"""A Claude-Code-style setup, as examples/claude-code.yaml configures it: the client's ANTHROPIC_BASE_URL and
ANTHROPIC_AUTH_TOKEN point at gearshift, and a request naming a large Claude model is served by the small one
when it has no tools and a short prompt, by the model it named otherwise."""

from __future__ import annotations

from pathlib import Path

import anthropic
import pytest
import yaml

from gearshift.gateway.server import running
from gearshift.gateway.summary import summarise
from tests.support.configs import parse_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import REPO, stored_traces

EDIT = {"name": "edit_file", "description": "Replace text in a file",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}


def test_claude_code_example_sends_small_tasks_to_the_small_model(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    data = yaml.safe_load((REPO / "examples" / "claude-code.yaml").read_text())
    del data["routers"]["claude-sonnet-4-5"]["shadow"]  # sampled: its pairs are shown elsewhere
    data["store"] = {"url": f"sqlite:///{tmp_path / 'traces.db'}", "flush_interval": 0.05}
    monkeypatch.setenv("GS_TEST_UPSTREAM_KEY", "sk-ant-upstream")  # gearshift's Anthropic key (not the client's)
    monkeypatch.setenv("GEARSHIFT_CLIENT_KEY", "gs-client-key")
    with FakeUpstream.running(api_key="sk-ant-upstream") as up:
        for model in data["models"].values():
            model["base_url"], model["api_key_env"] = up.anthropic_url, "GS_TEST_UPSTREAM_KEY"
        config = parse_config(data, base_dir=tmp_path)
        with running(config) as gw:
            # What Claude Code does with these variables: the SDK reads them from the environment.
            monkeypatch.setenv("ANTHROPIC_BASE_URL", gw.url)
            monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "gs-client-key")
            monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
            claude = anthropic.Anthropic(max_retries=0)
            title = claude.messages.with_raw_response.create(
                model="claude-sonnet-4-5", max_tokens=50, system="Write a 5-word title for this conversation.",
                messages=[{"role": "user", "content": "fix the failing test in parser.py"}])
            assert title.headers["x-gearshift-model"] == "haiku"
            assert up.requests[-1].json["model"] == "claude-haiku-4-5"
            with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=500, tools=[EDIT],  # type: ignore[list-item]
                                        messages=[{"role": "user", "content": "fix the failing test"}]) as stream:
                assert stream.get_final_text() == "echo: fix the failing test"
            assert up.requests[-1].json["model"] == "claude-sonnet-4-5" and up.requests[-1].json["tools"] == [EDIT]
            assert claude.messages.create(model="claude-opus-4-6", max_tokens=50, messages=[
                {"role": "user", "content": "ok"}]).content
            assert up.requests[-1].json["model"] == "claude-haiku-4-5"
            with pytest.raises(anthropic.AuthenticationError):
                anthropic.Anthropic(api_key="wrong", max_retries=0).messages.create(
                    model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}])
            traces = stored_traces(gw, 3)
    assert [(t["router"], t["final_model"], t["endpoint"]) for t in traces] == [
        ("claude-sonnet-4-5", "haiku", "messages"), ("claude-sonnet-4-5", "sonnet", "messages"),
        ("claude-opus-4-6", "haiku", "messages")]
    assert all(t["client"] == "claude-code" for t in traces)
    assert summarise(traces, config)["by_endpoint"] == {"messages": 3}
