"""The plan: one config file validated and built into what the gateway and the lab run.

`load(path)` is the one door for configuration: `gearshift check-config`, `gearshift serve`, the
gateway's construction and the lab all go through it, so a config one of them accepts, all accept.
It checks what config.py cannot know (router, gate, provider and store kinds; shadow conditions and
judges) and builds the routers, raising one ConfigError with every problem found.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from gearshift.config import Config, ModelConfig, ShadowConfig, error_lines, parse_config, read_yaml
from gearshift.errors import ConfigError
from gearshift.gates.judge import check_judge_capability
from gearshift.providers import PROVIDERS, Provider
from gearshift.routers import Router, parse_router
from gearshift.routers.base import ScoringRouter
from gearshift.routers.rules import Condition, When
from gearshift.store import check_url

log = logging.getLogger("gearshift.plan")


@dataclass(frozen=True)
class ShadowPolicy:
    """One router's shadow settings, compiled: whom to compare with, which requests, what budget."""

    router: str
    rate: float
    reference: str
    condition: Condition | None
    budget: float | None
    judge: str | None
    explore: str | None
    method: str
    resolve: str | None = None  # judge of sampled disagreements (shadow.resolve)
    resolve_rate: float = 0.0
    observe_rate: float | None = None  # the rate while the router observes (None: `rate`)

    def rate_for(self, observing: bool) -> float:
        """The share of requests shadowed, while the router observes or not."""
        return self.observe_rate if observing and self.observe_rate is not None else self.rate


@dataclass(frozen=True)
class Plan:
    """A validated config and everything built from it. Treat it as read-only: gateways and workers share it."""

    config: Config
    routers: Mapping[str, Router[Any]]
    providers: Mapping[str, type[Provider]]  # model name -> its provider class
    shadows: Mapping[str, ShadowPolicy]  # router name -> shadow policy (routers that shadow at all)
    warnings: tuple[str, ...] = ()
    source: str = field(default="<config>", compare=False)


def load(path: str | Path, serving: bool = True) -> Plan:
    """Read, validate and build a YAML config file; ConfigError with every problem found.

    `serving`: also require what serving needs (client keys or an explicit open gateway, every named
    secret in the environment); commands that only read the store or replay outcomes pass False."""
    p = Path(path)
    return parse(read_yaml(p), source=str(p), base_dir=p.resolve().parent, serving=serving)


def parse(data: Any, source: str = "<config>", base_dir: str | Path = ".", serving: bool = True) -> Plan:
    """Validate and build a parsed YAML document."""
    return build(parse_config(data, source, base_dir), source, serving)


def of(config: Config | Plan) -> Plan:
    """The plan of a config (built now) or the plan itself."""
    return config if isinstance(config, Plan) else build(config)


def build(config: Config, source: str = "<config>", serving: bool = True) -> Plan:
    """Check the kind-specific parts of a validated Config and build its routers and shadow policies."""
    problems: list[str] = []
    config, providers = _models(config, problems)
    if serving:
        _secrets(config, problems)
    if (line := check_url(config.store.url)) is not None:
        problems.append(line)
    if (line := _metrics_key(config)) is not None:
        problems.append(line)
    routers = _routers(config, source, problems)
    shadows, warnings = _shadows(config, problems)
    problems += _observe_problems(routers, shadows)
    problems += _budget_problems(config)
    if problems:
        raise ConfigError(_message(problems, source))
    for w in warnings:
        log.warning("%s", w)
    return Plan(config=config, routers=MappingProxyType(routers), providers=MappingProxyType(providers),
                shadows=MappingProxyType(shadows), warnings=tuple(warnings), source=source)


def build_routers(config: Config, source: str = "<config>") -> dict[str, Router[Any]]:
    """Only the routers of a config (the lab's use): validated, built and linked."""
    problems: list[str] = []
    routers = _routers(config, source, problems)
    if problems:
        raise ConfigError(_message(problems, source))
    return routers


def shadow_policies(config: Config) -> dict[str, ShadowPolicy]:
    """Shadow policies of every router that shadows; ConfigError for a bad condition or a weak judge."""
    problems: list[str] = []
    shadows, _ = _shadows(config, problems)
    if problems:
        raise ConfigError(_message(problems, "<config>"))
    return shadows


def _metrics_key(config: Config) -> str | None:
    """A metrics key named but not set must stop the start: never serve the details open by mistake."""
    name = config.server.metrics_key_env
    if name and not os.environ.get(name):
        return (f"server.metrics_key_env: the environment variable {name} is not set; set it to the key "
                "/metrics and /health require, or remove server.metrics_key_env to leave them open")
    return None


MIN_KEY_SECRET = 32  # characters of the server secret virtual keys are hashed with


def _key_secret(config: Config) -> str | None:
    """A key secret named but missing or short must stop the start: keys hashed with a guessable secret
    (or none) would be worthless."""
    name = config.server.key_secret_env
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        return (f"server.key_secret_env: the environment variable {name} is not set; fix: export "
                f"{name}=\"$(python -c 'import secrets; print(secrets.token_urlsafe(48))')\" (keep it: keys are "
                "hashed with it), or remove server.key_secret_env to use config client_keys only")
    if len(value) < MIN_KEY_SECRET:
        return (f"server.key_secret_env: {name} holds {len(value)} characters, fewer than {MIN_KEY_SECRET}; fix: "
                f"set it to {MIN_KEY_SECRET}+ random characters (e.g. secrets.token_urlsafe(48))")
    return None


def key_secret(config: Config) -> bytes | None:
    """The server secret virtual keys are hashed with (None: virtual keys are off); ConfigError when it is
    named but missing or short."""
    if (line := _key_secret(config)) is not None:
        raise ConfigError(line)
    name = config.server.key_secret_env
    return os.environ[name].encode() if name else None


def _message(problems: list[str], source: str) -> str:
    # Router problems arrive as whole blocks naming the source; single lines get it here.
    return "\n".join(p if p.startswith(f"{source}: ") else f"{source}: {p}" for p in problems)


def _models(config: Config, problems: list[str]) -> tuple[Config, dict[str, type[Provider]]]:
    """Each model's provider class; models without base_url get the provider's default."""
    providers: dict[str, type[Provider]] = {}
    models: dict[str, ModelConfig] = {}
    for name, m in config.models.items():
        try:
            cls = PROVIDERS.resolve(m.provider, f"models.{name}.provider")
        except ConfigError as e:
            problems.append(str(e))
            continue
        problems += [f"models.{name}: provider {m.provider!r} needs {need}" for need in cls.check(m)]
        if m.api == "responses" and not cls.responses_api:
            problems.append(f"models.{name}.api: provider {m.provider!r} has no Responses API; fix: leave `api` "
                            "out (requests are translated to its own API) or use provider openai")
        if not m.base_url and cls.default_base_url:
            m = m.model_copy(update={"base_url": cls.default_base_url})
        providers[name] = cls
        models[name] = m
    if models != config.models and len(models) == len(config.models):
        config = config.model_copy(update={"models": models})
    return config, providers


# Providers that never send a key: a named key variable of theirs is not needed.
KEYLESS_PROVIDERS = ("replay",)


def _secrets(config: Config, problems: list[str]) -> None:
    """Fail closed: every named secret must be in the environment, and an open gateway is asked for."""
    if (line := _key_secret(config)) is not None:
        problems.append(line)
    virtual = config.server.key_secret_env is not None
    if virtual and config.server.open:
        problems.append("server.open: true, but server.key_secret_env enables virtual keys; fix: remove "
                        "`server.open` (keys authenticate) or remove server.key_secret_env")
    if not config.client_keys and not config.server.open and not virtual:
        problems.append("client_keys: none configured, so anyone who can reach the port could use the gateway; "
                        "fix: add client_keys (e.g. `- {name: app, key_env: GEARSHIFT_CLIENT_KEY}`), or set "
                        "`server: {open: true}` to serve without authentication")
    if config.client_keys and config.server.open:
        problems.append("server.open: true, but client_keys are configured; fix: remove `server.open` "
                        "(keys authenticate) or remove the client_keys (open to anyone)")
    for i, k in enumerate(config.client_keys):
        if k.key_env is not None and not os.environ.get(k.key_env):
            problems.append(f"client_keys.{i}.key_env: the environment variable {k.key_env} (key {k.name!r}) "
                            f"is not set; fix: export {k.key_env}=<the key clients send>, or remove the key")
        elif k.key is not None and not k.key:
            problems.append(f"client_keys.{i}.key: empty (key {k.name!r}); fix: give a key, or use key_env")
    for name, m in config.models.items():
        if m.api_key_env and not os.environ.get(m.api_key_env) and m.provider not in KEYLESS_PROVIDERS:
            problems.append(f"models.{name}.api_key_env: the environment variable {m.api_key_env} is not set; "
                            f"fix: export {m.api_key_env}=<the upstream's API key>, or leave api_key_env out "
                            "for an upstream that needs no key")


def _routers(config: Config, source: str, problems: list[str]) -> dict[str, Router[Any]]:
    parsed = {}
    for name, rc in config.routers.items():
        try:
            parsed[name] = parse_router(name, rc, config, source)
        except ConfigError as e:
            problems.append(str(e))
    if problems:
        return {}  # building on a broken config would only repeat its problems
    routers: dict[str, Router[Any]] = {}
    try:
        for name, (cls, options) in parsed.items():
            rc = config.routers[name]
            routers[name] = cls.from_config(name, options, config, rc.fallbacks, rc.shadow)
        for r in routers.values():
            r.bind(routers)  # link phase: split arms and cascade start routers
    except ConfigError as e:
        problems.append(str(e))
    return routers


def _observe_problems(routers: Mapping[str, Router[Any]], shadows: Mapping[str, ShadowPolicy]) -> list[str]:
    """An observing router proves itself on shadow pairs alone: a config that can never make one is refused,
    or the router would observe forever without saying why."""
    problems = []
    for name, r in routers.items():
        if not isinstance(r, ScoringRouter) or not r.observed:
            if r.shadow is not None and r.shadow.observe_rate is not None:
                problems.append(f"routers.{name}.shadow.observe_rate: {name} never observes (only a scoring router "
                                f"with mode: observe does), so this rate would never apply; fix: set "
                                f"routers.{name}.mode: observe, or remove observe_rate")
            continue
        policy = shadows.get(name)
        if policy is None and not shadows:
            problems.append(f"routers.{name}.mode: observe proves the router on shadow pairs, and nothing is "
                            f"shadowed; fix: add routers.{name}.shadow (rate, and explore: {r.weak})")
        elif policy is not None and policy.reference == r.safe and not policy.explore:
            problems.append(f"routers.{name}.shadow.explore: while observing, {name} serves {r.safe}, the shadow "
                            f"reference, so no pair is ever made; fix: set explore: {r.weak} (the cheap model "
                            "is then shadowed on the answered requests)")
    return problems


def _budget_problems(config: Config) -> list[str]:
    """`on_budget` names a router that exists and serves itself: a downshift never downshifts again."""
    problems = []
    for name, rc in config.routers.items():
        if rc.on_budget is None:
            continue
        key, target = f"routers.{name}.on_budget.router", rc.on_budget.router
        other = config.routers.get(target)
        if other is None:
            problems.append(f"{key}: no router named {target!r}; fix: name one of the routers: "
                            f"{', '.join(sorted(n for n in config.routers if n != name))}")
        elif target == name:
            problems.append(f"{key}: {name!r} downshifts to itself; fix: name a cheaper router")
        elif other.on_budget is not None:
            problems.append(f"{key}: {target!r} has its own on_budget, so downshifts would chain; fix: name a "
                            f"router without on_budget, or remove routers.{target}.on_budget")
    return problems


def _shadows(config: Config, problems: list[str]) -> tuple[dict[str, ShadowPolicy], list[str]]:
    shadows: dict[str, ShadowPolicy] = {}
    warnings: list[str] = []
    for name, rc in config.routers.items():
        if rc.shadow is None:
            continue
        try:
            policy, warning = _shadow(name, rc.shadow, config)
        except ConfigError as e:
            problems.append(str(e))
            continue
        if warning:
            warnings.append(warning)
        if policy.rate > 0 or policy.observe_rate:
            shadows[name] = policy
    return shadows, warnings


def _shadow(router: str, cfg: ShadowConfig, config: Config) -> tuple[ShadowPolicy, str | None]:
    where = f"routers.{router}.shadow"
    condition = None
    if cfg.when:
        try:
            condition = Condition(When.model_validate(cfg.when))
        except ValidationError as err:
            unknown = f"unknown condition; allowed: {', '.join(sorted(When.model_fields))}"
            raise ConfigError("\n".join([f"invalid shadow condition of router {router!r}",
                                         *error_lines(err, f"{where}.when", unknown)])) from None
    reference = cfg.reference or config.strongest()
    warning = None
    if cfg.judge:
        warning = check_judge_capability(config.models[cfg.judge], config.models[reference],
                                         cfg.allow_weak_judge, where=f"{where}.judge")
    if cfg.resolve is not None:
        warning = check_judge_capability(config.models[cfg.resolve.judge], config.models[reference],
                                         cfg.allow_weak_judge, where=f"{where}.resolve.judge") or warning
    policy = ShadowPolicy(router=router, rate=cfg.rate, reference=reference, condition=condition,
                          budget=cfg.daily_budget_usd, judge=cfg.judge, explore=cfg.explore, method=cfg.compare,
                          resolve=cfg.resolve.judge if cfg.resolve else None,
                          resolve_rate=cfg.resolve.rate if cfg.resolve else 0.0, observe_rate=cfg.observe_rate)
    return policy, warning


__all__ = ["Plan", "ShadowPolicy", "build", "build_routers", "load", "of", "parse", "shadow_policies"]
