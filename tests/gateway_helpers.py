"""Shared set-up of gateway tests: a config pointing at a fake upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gearshift.config import Config, parse_config


def gateway_config(upstream_url: str, tmp_path: Path, **overrides: Any) -> Config:
    """Two OpenAI-compatible models and one Anthropic model on the fake upstream, and a rules router."""
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
