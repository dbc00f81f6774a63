"""Who a request comes from: a client key's name and team, what it may use, and its allowances.

A key from the config and a virtual key from the store become the same Principal, so everything after
authentication (limits, budgets, routing near a budget, attribution) reads one shape."""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gearshift.config import ClientKey, Config, Limits, TeamConfig

KEY_PREFIX = "gs-"  # every virtual key starts so: a token without it is not looked up
KEY_RANDOM_BYTES = 32  # secrets.token_urlsafe(32): 43 url-safe characters, 256 bits
SHOWN_CHARS = 8  # of a key, what listings show: `gs-` and 5 characters, e.g. `gs-abc12…`


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
    virtual: bool = False  # a stored (virtual) key, not one of the config's client_keys

    def expired(self, now: float) -> bool:
        """Whether the key's expiry has passed."""
        return self.expires is not None and self.expires <= now

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


def config_keys(config: Config) -> list[tuple[Principal, bytes]]:
    """The config's client keys as (principal, secret) pairs, the secrets read from the environment now."""
    return [(from_config(k, config.teams), (k.secret() or "").encode()) for k in config.client_keys]


def new_key() -> str:
    """A fresh virtual key: `gs-` and 43 random url-safe characters (shown once, never stored)."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def key_hash(secret: bytes, token: str | bytes) -> str:
    """What the store keeps of a key: HMAC-SHA-256 of it with the server secret, as hex."""
    raw = token.encode() if isinstance(token, str) else token
    return hmac.digest(secret, raw, "sha256").hex()  # the one-shot C path: cheaper per request than hmac.new


def shown(token: str) -> str:
    """The start of a key that listings show, so its owner can tell keys apart (`gs-abc12…`)."""
    return token[:SHOWN_CHARS] + "\u2026"


def from_record(record: Mapping[str, Any], teams: Mapping[str, TeamConfig]) -> Principal:
    """The principal a stored virtual key stands for (a `keys` row as the store decodes it)."""
    team = teams.get(record["team"]) if record.get("team") else None

    def names(v: Any) -> frozenset[str] | None:
        if v is None:
            return None
        return frozenset(json.loads(v) if isinstance(v, str) else v)

    return Principal(name=record["name"], team=record.get("team"), admin=bool(record.get("admin")),
                     routers=names(record.get("routers")), models=names(record.get("models")),
                     expires=record.get("expires"), virtual=True,
                     allowance=Allowance(record.get("rpm"), record.get("tpm"), record.get("usd_day"),
                                         record.get("usd_month")),
                     team_allowance=Allowance.of(team.limits if team else None))
