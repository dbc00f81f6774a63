"""Router kinds. Adding a kind is one module with a Router subclass that sets `kind` (ROUTERS finds it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from gearshift.config import RouterConfig, error_lines
from gearshift.errors import ConfigError
from gearshift.registry import Registry
from gearshift.routers.base import Options, Router, ScoringRouter

if TYPE_CHECKING:
    from gearshift.config import Config

ROUTERS: Registry[Router[Any]] = Registry("gearshift.routers", Router, "router kind")


def parse_router(name: str, rc: RouterConfig, config: Config,
                 source: str = "<config>") -> tuple[type[Router[Any]], Options]:
    """A router's class and validated options; ConfigError naming each bad key."""
    cls = ROUTERS.get(rc.kind)
    if cls is None:
        raise ConfigError(f"{source}: routers.{name}.kind: bad value {rc.kind!r}; allowed: {sorted(ROUTERS)}")
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


__all__ = ["ROUTERS", "Options", "Router", "ScoringRouter", "parse_router"]
