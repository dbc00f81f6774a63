"""Shared set-up of gateway tests: a config pointing at a fake upstream."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import yaml

from gearshift.config import Config
from tests.support.configs import parse_config

REPO = Path(__file__).resolve().parents[2]


def gateway_config(upstream_url: str, tmp_path: Path, **overrides: Any) -> Config:
    """Two OpenAI-compatible models and one Anthropic model on the fake upstream, and a rules router.

    The upstream key's variable must be set (a named, missing secret is refused): a test that does not
    choose its value gets a dummy one."""
    os.environ.setdefault("GS_TEST_UPSTREAM_KEY", "sk-test-upstream")
    models: dict[str, Any] = {
        "small": {"provider": "openai", "upstream_id": "fake-small", "base_url": upstream_url + "/v1",
                  "api_key_env": "GS_TEST_UPSTREAM_KEY", "price": {"input": 1.0, "output": 2.0}, "rank": 1,
                  "retries": 0, "timeout": {"connect": 1, "read": 2}},
        "large": {"provider": "openai", "upstream_id": "fake-large", "base_url": upstream_url + "/v1",
                  "api_key_env": "GS_TEST_UPSTREAM_KEY", "price": {"input": 10.0, "output": 30.0}, "rank": 9,
                  "retries": 0, "timeout": {"connect": 1, "read": 2}},
        "claude": {"provider": "anthropic", "upstream_id": "fake-claude", "base_url": upstream_url,
                   "api_key_env": "GS_TEST_UPSTREAM_KEY", "price": {"input": 3.0, "output": 15.0}, "rank": 8,
                   "retries": 0, "timeout": {"connect": 1, "read": 2}},
    }
    data: dict[str, Any] = {
        "models": models,
        "routers": {
            "gearshift/auto": {"kind": "rules", "default": "small", "fallbacks": ["large"],
                               "rules": [{"name": "vip", "when": {"metadata": {"tier": "pro"}}, "model": "large"}]},
            "gearshift/strong": {"kind": "fixed", "model": "large"},
        },
        "store": {"url": f"sqlite:///{tmp_path / 'traces.db'}", "flush_interval": 0.05},
    }
    for key, value in overrides.items():
        data[key] = value
    return parse_config(data, base_dir=tmp_path)


def replay_config_file(tmp_path: Path, routers: dict[str, Any], store: dict[str, Any] | None = None) -> Path:
    """A config file serving GSM8K from the recorded answers of Mixtral-8x7B and GPT-4-1106
    (examples/replay-gsm8k.yaml) with these routers, polling router versions every 0.1 s."""
    base = yaml.safe_load((REPO / "examples" / "replay-gsm8k.yaml").read_text())
    base["routers"] = routers
    base["store"] = store or {"url": f"sqlite:///{tmp_path / 'traces.db'}", "flush_interval": 0.05}
    base["server"] = {"version_poll_seconds": 0.1, "open": True}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def send(gw, prompts: list[str], model: str, users: bool = False) -> list[str]:  # type: ignore[no-untyped-def]
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)

    def one(i: int) -> str:
        extra = {"user": f"user-{i % 40}"} if users else {}
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": prompts[i]}], **extra)
        return raw.headers["x-gearshift-trace-id"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(len(prompts))))


def settle(gw) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    g = gw.gateway
    while (g.shadower.queue.qsize() or g.writer.pending()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)


def promote_and_wait(config_path: Path, router: str, version: int, applied: Callable[[], bool]) -> None:
    """Promote a version through the CLI (another process, as an operator would) and wait for the
    running gateway's version poll to apply it."""
    out = subprocess.run([sys.executable, "-m", "gearshift.cli", "routers", "promote", "--config", str(config_path),
                          router, str(version), "--by", "alice"], capture_output=True, text=True, env={**os.environ})
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 10
    while not applied() and time.monotonic() < deadline:
        time.sleep(0.05)


def stored_traces(gw: Any, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The gateway's stored traces, oldest first, once at least `n` are written."""
    deadline = time.monotonic() + timeout
    while True:
        rows = list(gw.gateway.store.traces())
        if len(rows) >= n:
            return sorted(rows, key=lambda t: t["created"])
        assert time.monotonic() < deadline, "traces were not written"
        time.sleep(0.05)
