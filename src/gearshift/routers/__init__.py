"""Router kinds. Adding a kind is one module and one line in KINDS."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from gearshift.config import error_lines
from gearshift.errors import ConfigError
from gearshift.routers.base import Router, ScoringRouter
from gearshift.routers.fixed import FixedRouter
from gearshift.routers.random import RandomRouter
from gearshift.routers.rules import RulesRouter
from gearshift.routers.split import SplitRouter

if TYPE_CHECKING:
    from gearshift.config import Config

KINDS: dict[str, type[Router]] = {r.kind: r for r in (FixedRouter, RandomRouter, RulesRouter, SplitRouter)}


def register(cls: type[Router]) -> type[Router]:
    """Add a router kind (classifier and cascade modules register themselves)."""
    KINDS[cls.kind] = cls
    return cls


def router_class(kind: str) -> type[Router] | None:
    """The class of a kind. Kinds not built in live in `gearshift.routers.<kind>` and register on
    import, so a gateway that uses none of them never imports their (heavier) modules."""
    if kind not in KINDS and kind.isidentifier():
        import importlib

        module = f"gearshift.routers.{kind}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
    return KINDS.get(kind)


def _parse(name: str, rc, config: Config, source: str):  # type: ignore[no-untyped-def]
    cls = router_class(rc.kind)
    if cls is None:
        allowed = sorted({*KINDS, "classifier", "cascade"})
        raise ConfigError(f"{source}: routers.{name}.kind: bad value {rc.kind!r}; allowed: {allowed}")
    try:
        options = cls.Options.model_validate(rc.options())
    except ValidationError as err:
        lines = [f"{source}: invalid router {name!r} (kind {rc.kind})",
                 *error_lines(err, f"routers.{name}", f"unknown key for kind {rc.kind}; remove it or check its spelling")]
        raise ConfigError("\n".join(lines)) from None
    problems = cls.check(name, options, config)
    if problems:
        lines = [f"{source}: invalid router {name!r} (kind {rc.kind})"]
        lines += [f"  routers.{name}.{key}: bad value {value!r}; allowed: {allowed}" for key, value, allowed in problems]
        raise ConfigError("\n".join(lines))
    return cls, options


def validate_router_configs(config: Config, source: str = "<config>") -> None:
    """Validate every router's kind-specific options; raise ConfigError naming the key."""
    for name, rc in config.routers.items():
        _parse(name, rc, config, source)


def build_routers(config: Config) -> dict[str, Router]:
    """Construct every configured router."""
    routers: dict[str, Router] = {}
    for name, rc in config.routers.items():
        cls, options = _parse(name, rc, config, "<config>")
        routers[name] = cls.from_config(name, options, config, rc.fallbacks, rc.shadow)
    for r in routers.values():
        r.bind(routers)
    return routers


__all__ = ["KINDS", "Router", "ScoringRouter", "build_routers", "register", "router_class", "validate_router_configs"]
