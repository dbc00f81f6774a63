"""Config validation: every error names the key, the bad value and what is allowed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gearshift.errors import ConfigError
from tests.support.configs import load_config, parse_config, secrets_named

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "models": {
        "small": {"provider": "openai", "price": {"input": 0.1, "output": 0.4}, "rank": 1},
        "large": {"provider": "openai", "price": {"input": 2.5, "output": 10}, "rank": 9},
    },
    "routers": {"gearshift/auto": {"kind": "rules", "default": "small", "fallbacks": ["large"],
                                   "rules": [{"when": {"min_tokens": 100}, "model": "large"}]}},
}


def with_(path: str, value: object) -> dict:
    import copy

    data = copy.deepcopy(BASE)
    node = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    node[keys[-1]] = value
    return data


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="test.yaml")
    return str(info.value)


def test_valid_config_fills_defaults() -> None:
    c = parse_config(BASE)
    assert c.models["small"].upstream_id == "small"
    assert c.models["small"].base_url == "https://api.openai.com/v1"
    assert c.strongest() == "large"
    assert c.store.url.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("path", "value", "must_contain"),
    [
        ("models.small.price.input", -1, ["models.small.price.input", "-1", "greater than or equal to 0"]),
        ("models.small.provider", "azure", ["models.small.provider", "azure", "openai", "anthropic", "replay"]),
        ("models.small.typo_key", 1, ["models.small.typo_key", "unknown key"]),
        ("models.small.base_url", "ftp://x", ["base_url", "ftp://x", "http"]),
        ("routers.gearshift/auto.default", "nope", ["routers.gearshift/auto.default", "nope", "small"]),
        ("routers.gearshift/auto.kind", "magic", ["routers.gearshift/auto.kind", "magic", "rules"]),
        ("routers.gearshift/auto.fallbacks", ["ghost"], ["fallbacks", "ghost", "large"]),
        ("routers.gearshift/auto.rules", [{"when": {"regex": "("}, "model": "large"}], ["regex", "does not compile"]),
        ("routers.gearshift/auto.rules", [{"when": {"scope": "everything"}, "model": "large"}], ["scope", "last_user"]),
        ("store.url", "mysql://x", ["store.url", "sqlite:///"]),
    ],
)
def test_bad_config_names_key_value_and_fix(path: str, value: object, must_contain: list[str]) -> None:
    msg = error_of(with_(path, value))
    for part in must_contain:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_replay_model_needs_its_source() -> None:
    msg = error_of(with_("models.small", {"provider": "replay", "price": {"input": 0, "output": 0}}))
    assert "replay" in msg and "dataset" in msg


def test_yaml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in secrets_named(example).items():
        monkeypatch.setenv(name, value)
    config = load_config(example)
    assert config.models


def test_check_config_command_exit_codes(tmp_path: Path) -> None:
    example = REPO / "examples/openai.yaml"
    good = subprocess.run([sys.executable, "-m", "gearshift.cli", "check-config", str(example)],
                          capture_output=True, text=True, env={**os.environ, **secrets_named(example)})
    assert good.returncode == 0, good.stderr
    assert "ok" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m:\n    provider: openai\n    price: {input: 1, output: x}\n")
    out = subprocess.run([sys.executable, "-m", "gearshift.cli", "check-config", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "models.m.price.output" in out.stderr and "'x'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(("key", "fix"), [
    ({"name": "a", "key": "k", "team": "nobody"}, "client_keys.0.team: bad value 'nobody'"),
    ({"name": "a", "key": "k", "routers": ["gearshift/nope"]}, "client_keys.0.routers.0: bad value 'gearshift/nope'"),
    ({"name": "a", "key": "k", "models": ["gpt-9"]}, "client_keys.0.models.0: bad value 'gpt-9'"),
    ({"name": "a", "key": "k", "limits": {"rpm": 0}}, "client_keys.0.limits.rpm"),
])
def test_a_client_key_names_only_what_the_config_has(key: dict, fix: str) -> None:
    data = {"models": {"m": {"provider": "openai", "price": {"input": 1, "output": 1}}},
            "routers": {"r": {"kind": "fixed", "model": "m"}}, "client_keys": [key], "teams": {"search": {}}}
    with pytest.raises(ConfigError, match=re.escape(fix)):
        parse_config(data)
