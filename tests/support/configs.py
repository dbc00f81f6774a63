"""Configs checked the way every command and the gateway check them: through gearshift.plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gearshift import plan
from gearshift.config import Config


def opened(data: Any) -> Any:
    """A config document that opts in to serving without client keys when it configures none:
    tests on 127.0.0.1 that are not about authentication say so explicitly, as an operator must."""
    if not isinstance(data, dict) or data.get("client_keys"):
        return data
    server = data.get("server") or {}
    return data if "open" in server else {**data, "server": {**server, "open": True}}


def parse_config(data: Any, source: str = "<config>", base_dir: str | Path = ".") -> Config:
    """A parsed YAML document, validated and built (router options, kinds, shadow); its Config."""
    return plan.parse(opened(data), source, base_dir).config


def load_config(path: str | Path) -> Config:
    """A config file, validated and built; its Config."""
    return plan.load(path).config


def secrets_named(path: str | Path) -> dict[str, str]:
    """A dummy value for each environment variable a config file names (api_key_env, key_env,
    password_env): what an operator would export before `serve` (missing ones are refused)."""
    data = yaml.safe_load(Path(path).read_text())
    names = {m.get("api_key_env") for m in data["models"].values()}
    names |= {k.get("key_env") for k in data.get("client_keys") or []}
    names.add((data.get("store") or {}).get("password_env"))
    return {n: "dummy-" + n.lower() for n in names if n}
