"""The plan: one door for configuration, so `check-config` and `serve` refuse exactly the same configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from gearshift import plan
from gearshift.cli import main
from gearshift.config import parse_config as shape_only
from gearshift.errors import ConfigError
from gearshift.gateway import server
from gearshift.gateway.app import create_app
from gearshift.schema import config_schema
from tests.support.configs import secrets_named

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

MODELS = {
    "small": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "price": {"input": 1, "output": 2}, "rank": 1},
    "large": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "price": {"input": 10, "output": 30},
              "rank": 9},
}


def with_shadow(shadow: dict[str, Any]) -> dict[str, Any]:
    return {"models": MODELS, "routers": {"auto": {"kind": "fixed", "model": "small", "shadow": shadow}},
            "server": {"open": True}}


def observing(shadow: dict[str, Any] | None) -> dict[str, Any]:
    router = {"kind": "random", "weights": {"small": 0.5, "large": 0.5}, "mode": "observe",
              **({"shadow": shadow} if shadow else {})}
    return {"models": MODELS, "routers": {"auto": router}, "server": {"open": True}}


def downshifting(to: str, target_on_budget: bool = False) -> dict[str, Any]:
    cheap: dict[str, Any] = {"kind": "fixed", "model": "small"}
    if target_on_budget:
        cheap["on_budget"] = {"at": 0.9, "router": "auto"}
    return {"models": MODELS, "server": {"open": True},
            "routers": {"auto": {"kind": "fixed", "model": "large", "on_budget": {"at": 0.8, "router": to}},
                        "cheap": cheap}}


KEYED = {"models": MODELS, "client_keys": [{"name": "app", "key_env": "GS_TEST_UNSET_CLIENT_KEY"}]}
UPSTREAM_KEY = {"models": {**MODELS, "small": {**MODELS["small"], "api_key_env": "GS_TEST_UNSET_UPSTREAM_KEY"}},
                "server": {"open": True}}

BAD = {
    # Fail closed: a secret named but absent, or no keys without asking for an open gateway.
    "client_key_env_unset": (KEYED, "client_keys.0.key_env: the environment variable GS_TEST_UNSET_CLIENT_KEY "
                             "(key 'app') is not set; fix: export GS_TEST_UNSET_CLIENT_KEY="),
    "upstream_key_env_unset": (UPSTREAM_KEY, "models.small.api_key_env: the environment variable "
                               "GS_TEST_UNSET_UPSTREAM_KEY is not set; fix: export GS_TEST_UNSET_UPSTREAM_KEY="),
    "open_not_asked_for": ({"models": MODELS}, "client_keys: none configured, so anyone who can reach the port "
                           "could use the gateway; fix: add client_keys"),
    "open_and_keys": ({**KEYED, "client_keys": [{"name": "app", "key": "sk-x"}], "server": {"open": True}},
                      "server.open: true, but client_keys are configured"),
    # Virtual keys hashed with a secret that is not there would be worthless: the start stops.
    "key_secret_unset": ({"models": MODELS, "server": {"key_secret_env": "GS_TEST_UNSET_KEY_SECRET"}},
                         "server.key_secret_env: the environment variable GS_TEST_UNSET_KEY_SECRET is not set; fix: "
                         "export GS_TEST_UNSET_KEY_SECRET="),
    "open_and_virtual_keys": ({"models": MODELS, "server": {"open": True, "key_secret_env": "GS_TEST_UNSET_KEY_SECRET"}},
                              "server.open: true, but server.key_secret_env enables virtual keys"),
    "shadow_when_key": (with_shadow({"rate": 1.0, "when": {"min_tokenz": 5}}),
                        "routers.auto.shadow.when.min_tokenz: unknown condition"),
    "weak_shadow_judge": (with_shadow({"rate": 1.0, "judge": "small"}), "allow_weak_judge"),
    # An observing router proves itself on shadow pairs: a config that can never make one is refused.
    "observe_without_explore": (observing({"rate": 1.0}), "routers.auto.shadow.explore: while observing, auto "
                                "serves large, the shadow reference, so no pair is ever made; fix: set explore: small"),
    # The observing rate applies only to a router that observes; a config that sets it elsewhere is a mistake.
    "observe_rate_never_observes": (with_shadow({"rate": 0.1, "observe_rate": 1.0}),
                                    "routers.auto.shadow.observe_rate: auto never observes (only a scoring router "
                                    "with mode: observe does), so this rate would never apply; fix: set "
                                    "routers.auto.mode: observe, or remove observe_rate"),
    "observe_rate_above_one": (observing({"rate": 0.1, "observe_rate": 1.5, "explore": "small"}),
                               "routers.auto.shadow.observe_rate: Input should be less than or equal to 1 (got 1.5)"),
    # A router's downshift near a budget goes to a router that exists and does not downshift again.
    "on_budget_unknown_router": (downshifting("cheapest"), "routers.auto.on_budget.router: no router named "
                                 "'cheapest'; fix: name one of the routers: cheap"),
    "on_budget_itself": (downshifting("auto"), "routers.auto.on_budget.router: 'auto' downshifts to itself; fix: "
                         "name a cheaper router"),
    "on_budget_chain": (downshifting("cheap", target_on_budget=True), "routers.auto.on_budget.router: 'cheap' has "
                        "its own on_budget, so downshifts would chain; fix: name a router without on_budget"),
    "observe_without_shadow": (observing(None), "routers.auto.mode: observe proves the router on shadow pairs, and "
                               "nothing is shadowed; fix: add routers.auto.shadow (rate, and explore: small)"),
    # The response cache's settings are typed: a bad value or an unknown key is refused by name.
    "cache_ttl": ({"models": MODELS, "routers": {"auto": {"kind": "fixed", "model": "small",
                                                          "cache": {"ttl_seconds": 0}}}, "server": {"open": True}},
                  "routers.auto.cache.ttl_seconds: Input should be greater than 0 (got 0)"),
    "cache_key": ({"models": MODELS, "routers": {"auto": {"kind": "fixed", "model": "small",
                                                          "cache": {"max_entry": 5}}}, "server": {"open": True}},
                  "routers.auto.cache.max_entry: unknown key; remove it or check its spelling"),
    # The dashboard cookie's Secure flag: one of two words (a YAML `yes` is not one of them).
    "ui_secure_cookie": ({"models": MODELS, "server": {"open": True, "ui_secure_cookie": True}},
                         "server.ui_secure_cookie: Input should be 'auto' or 'always' (got True)"),
}


def check_config(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["check-config", str(path)])
    return result.exit_code, result.stderr


def serve(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, list[plan.Plan]]:
    """`gearshift serve` up to the point where it would listen (the plan it would serve is recorded)."""
    served: list[plan.Plan] = []
    monkeypatch.setattr(server, "serve", lambda p, *args: served.append(p))
    result = CliRunner().invoke(main, ["serve", "--config", str(path)])
    return result.exit_code, result.stderr, served


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_config_and_serve_refuse_alike(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, expected = BAD[case]
    path = tmp_path / "gs.yaml"
    path.write_text(yaml.safe_dump(data))
    code, err = check_config(path)
    assert code == 2 and expected in err and "Traceback" not in err
    serve_code, serve_err, served = serve(path, monkeypatch)
    assert (serve_code, serve_err, served) == (code, err, [])
    # A gateway built in-process from the (shape-valid) Config refuses it with the same lines.
    with pytest.raises(ConfigError) as info:
        create_app(shape_only(data, base_dir=tmp_path))
    assert str(info.value).replace("<config>: ", "") == err.strip().replace(f"{path}: ", "")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_check_config_and_serve_accept_the_examples(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in secrets_named(example).items():
        monkeypatch.setenv(name, value)
    code, err = check_config(example)
    serve_code, serve_err, served = serve(example, monkeypatch)
    assert code == serve_code == 0, err + serve_err
    [p] = served
    assert set(p.routers) == set(p.config.routers) and set(p.providers) == set(p.config.models)


def test_every_problem_is_reported_at_once() -> None:
    data = with_shadow({"rate": 1.0, "when": {"min_tokenz": 5}})
    data["models"] = {**MODELS, "x": {"provider": "azure", "price": {"input": 0, "output": 0}}}
    data["store"] = {"url": "mysql://h/db"}
    with pytest.raises(ConfigError) as info:
        plan.parse(data, source="gs.yaml")
    msg = str(info.value)
    for part in ("gs.yaml: models.x.provider: bad value 'azure'", "gs.yaml: store.url: bad value 'mysql://h/db'",
                 "routers.auto.shadow.when.min_tokenz"):
        assert part in msg


def test_the_plan_is_read_only_and_fills_provider_defaults() -> None:
    p = plan.parse({"models": {"m": {"provider": "anthropic", "price": {"input": 1, "output": 1}}},
                    "routers": {"r": {"kind": "fixed", "model": "m", "shadow": {"rate": 0.5}}},
                    "server": {"open": True}})
    assert p.config.models["m"].base_url == "https://api.anthropic.com"
    assert p.shadows["r"].reference == "m" and p.shadows["r"].rate == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.routers = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.routers["other"] = p.routers["r"]  # type: ignore[index]


def test_config_schema_is_json_schema_and_describes_every_kind() -> None:
    schema = config_schema()
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for example in EXAMPLES:
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(example.read_text()))]
        assert errors == [], f"{example.name}: {errors}"
    defs = schema["$defs"]
    assert "rules" in defs["RulesRouterConfig"]["properties"] and "tiers" in defs["CascadeRouterConfig"]["properties"]
    assert "JudgeGateSpec" in defs and "items" in defs["TierOptions"]["properties"]["gates"]
    bad = {"models": MODELS, "routers": {"r": {"kind": "rules", "tiers": [], "default": "small"}}}
    assert not validator.is_valid(bad)  # a cascade key on a rules router
    bad_gate = {"models": MODELS, "routers": {"c": {"kind": "cascade", "tiers": [
        {"model": "small", "gates": [{"kind": "length", "mni": 3}]}, {"model": "large"}]}}}
    assert not validator.is_valid(bad_gate)


def test_config_schema_command_prints_it() -> None:
    result = CliRunner().invoke(main, ["config-schema"])
    assert result.exit_code == 0 and '"RulesRouterConfig"' in result.stdout


def test_keys_named_and_set_or_keyless_providers_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_TEST_UNSET_CLIENT_KEY", "sk-client")
    monkeypatch.setenv("GS_TEST_UNSET_UPSTREAM_KEY", "sk-upstream")
    assert plan.parse(KEYED).config.client_keys[0].secret() == "sk-client"
    assert plan.parse(UPSTREAM_KEY).config.models["small"].api_key() == "sk-upstream"
    # No api_key_env: an upstream that needs no key (a local server). Replay never sends one.
    assert plan.parse({"models": MODELS, "server": {"open": True}}).config.models["large"].api_key() is None


def test_only_serving_needs_the_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The lab and the store commands read a config without serving it: no client keys or upstream keys needed.
    monkeypatch.delenv("GS_PLAN_UPSTREAM_KEY", raising=False)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"models": {"m": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                     "api_key_env": "GS_PLAN_UPSTREAM_KEY",
                                                     "price": {"input": 1, "output": 1}}}}))
    assert plan.load(path, serving=False).config.models["m"].api_key_env == "GS_PLAN_UPSTREAM_KEY"
    with pytest.raises(ConfigError) as e:
        plan.load(path)
    assert "client_keys: none configured" in str(e.value) and "models.m.api_key_env" in str(e.value)


def test_a_short_key_secret_is_refused_and_a_long_one_needs_no_client_keys(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gs.yaml"
    path.write_text(yaml.safe_dump({"models": MODELS, "server": {"key_secret_env": "GS_TEST_KEY_SECRET"}}))
    monkeypatch.setenv("GS_TEST_KEY_SECRET", "x" * 31)
    code, err = check_config(path)
    assert code == 2 and "server.key_secret_env: GS_TEST_KEY_SECRET holds 31 characters, fewer than 32" in err
    assert "x" * 31 not in err  # the secret itself is never printed
    monkeypatch.setenv("GS_TEST_KEY_SECRET", "x" * 32)
    assert check_config(path)[0] == 0  # virtual keys authenticate: no client_keys, no `open` needed
