"""Who a request comes from: a client key's name and team, what it may use, and its allowances.

A key from the config and a virtual key from the store become the same Principal, so everything after
authentication (limits, budgets, routing near a budget, attribution) reads one shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gearshift.config import ClientKey, Limits, TeamConfig


@dataclass(frozen=True, slots=True)
class Allowance:
    """Requests and tokens per minute, and USD per day and per month; None is no limit."""

    rpm: int | None = None
    tpm: int | None = None
    usd_day: float | None = None
    usd_month: float | None = None

    @classmethod
    def of(cls, limits: Limits | None) -> Allowance:
        """The allowance a config `limits:` block grants (none: unlimited)."""
        if limits is None:
            return UNLIMITED
        return cls(limits.rpm, limits.tpm, limits.usd_day, limits.usd_month)

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None and self.usd_day is None and self.usd_month is None


UNLIMITED = Allowance()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated client key. `routers` and `models` are what it may name (None: any)."""

    name: str
    team: str | None = None
    admin: bool = False
    routers: frozenset[str] | None = None
    models: frozenset[str] | None = None
    expires: float | None = None  # unix seconds; None: never
    allowance: Allowance = UNLIMITED
    team_allowance: Allowance = UNLIMITED

    def may_use(self, name: str, is_router: bool) -> bool:
        """Whether this key may name the router or model `name` in a request."""
        allowed = self.routers if is_router else self.models
        return allowed is None or name in allowed


def from_config(key: ClientKey, teams: Mapping[str, TeamConfig]) -> Principal:
    """The principal a config `client_keys` entry stands for."""
    team = teams.get(key.team) if key.team else None
    return Principal(name=key.name, team=key.team, admin=key.admin,
                     routers=frozenset(key.routers) if key.routers is not None else None,
                     models=frozenset(key.models) if key.models is not None else None,
                     allowance=Allowance.of(key.limits), team_allowance=Allowance.of(team.limits if team else None))
