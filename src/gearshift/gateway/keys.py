"""Virtual keys: the replica's lookup cache (KeyRing), and creating, listing, updating and revoking keys,
as `gearshift keys` and `/admin/keys` both do it (one set of checks, one set of messages).

A key is `gs-` and 43 random characters, shown once. The store keeps only its HMAC-SHA-256 with the
server secret (`server.key_secret_env`), and a request's key is found by that HMAC through a unique
index. Each replica remembers what it found (and what it did not) for `server.key_cache_seconds`: a
revoked key is refused everywhere within that interval; an expired one at once (each request checks
the remembered expiry)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gearshift.config import Config, TeamConfig
from gearshift.errors import BadRequest, Conflict, NotFound, Unauthorized
from gearshift.principal import KEY_PREFIX, Principal, from_record, key_hash, new_key, shown
from gearshift.store.base import TraceStore

log = logging.getLogger("gearshift.gateway")

CACHE_SIZE = 10_000  # keys found, and separately wrong keys, remembered per replica: memory stays bounded
MAX_TOKEN = 256  # longer bearer tokens are not keys: refused without hashing or a store read
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}")


class KeyRing:
    """A replica's view of the virtual keys: HMAC of the presented token, then the cache, then the store."""

    def __init__(self, store: TraceStore, secret: bytes, ttl: float, size: int = CACHE_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.secret, self.ttl, self.size, self.clock = store, secret, ttl, size, clock
        self._found: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        # Wrong keys apart from found ones: a flood of them evicts only each other, never a real key.
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self.lookups = 0  # store reads (cache misses)

    def clear(self) -> None:
        """Forget every looked-up key (a reload may change the teams' allowances)."""
        self._found.clear()
        self._unknown.clear()

    async def find(self, token: bytes, teams: Mapping[str, TeamConfig]) -> Principal | None:
        """The key's principal (revoked or unknown: None); the store is read off the event loop, on a miss only."""
        if not token.startswith(KEY_PREFIX.encode()) or len(token) > MAX_TOKEN:
            return None
        return await self.find_hash(key_hash(self.secret, token), teams)

    async def find_hash(self, digest: str, teams: Mapping[str, TeamConfig]) -> Principal | None:
        """The principal of the key with this HMAC (`key_hash` of it), through the same cache as `find`."""
        now = self.clock()
        hit = self._found.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        until = self._unknown.get(digest)
        if until is not None and until > now:
            return None
        try:
            principal = await asyncio.to_thread(self._read, digest, teams)
        except Exception as e:  # noqa: BLE001 - an unreachable store: refuse (fail closed), remember nothing
            log.warning("virtual key lookup failed (the key is refused): %s", type(e).__name__)
            return None
        self._remember(digest, principal, self.clock() + self.ttl)
        return principal

    def _read(self, digest: str, teams: Mapping[str, TeamConfig]) -> Principal | None:
        self.lookups += 1
        found = self.store.key_by_hash(digest)
        if found is None:
            return None
        stored, record = found
        if not hmac.compare_digest(stored, digest) or record.get("revoked_at") is not None:
            return None
        return from_record(record, teams)

    def _remember(self, digest: str, principal: Principal | None, until: float) -> None:
        self._found.pop(digest, None)
        self._unknown.pop(digest, None)
        table: OrderedDict[str, Any] = self._unknown if principal is None else self._found
        table[digest] = until if principal is None else (until, principal)
        while len(table) > self.size:
            table.popitem(last=False)


async def authenticate(token: bytes, keys: Sequence[tuple[Principal, bytes]], ring: KeyRing | None,
                       teams: Mapping[str, TeamConfig], hint: str, now: float | None = None) -> Principal:
    """The key a token is: a config key (`keys`: principal and secret), else a virtual key; Unauthorized
    when it is neither or has expired. The one way a presented key is checked (gateway and dashboard)."""
    found = None
    for principal, secret in keys:
        # Compare against every key so timing does not reveal which one matched.
        if hmac.compare_digest(token, secret):
            found = principal
    if found is None and ring is not None:
        found = await ring.find(token, teams)
    if found is None:
        raise Unauthorized(f"missing or invalid API key: send {hint}")
    if found.expired(time.time() if now is None else now):
        raise Unauthorized(f"the API key {found.name!r} has expired; ask an admin for a new one",
                           code="expired_api_key")
    return found


# --- managing keys (CLI and admin API) ---------------------------------------------------------------

DURATION = re.compile(r"(\d+(?:\.\d+)?)([dhm])")
UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0}


def parse_expires(value: Any, now: float | None = None) -> float | None:
    """An expiry as unix seconds: a number, `YYYY-MM-DD` (midnight UTC), an ISO time, or `30d` / `12h` /
    `90m` from now; None for none. ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a date (2027-01-01), a duration (30d, 12h) or unix seconds")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a date (2027-01-01), a duration (30d, 12h) or unix seconds")
    text = value.strip()
    if m := DURATION.fullmatch(text):
        return (now if now is not None else time.time()) + float(m.group(1)) * UNITS[m.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a date (2027-01-01), a duration (30d, 12h) or unix seconds") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _names(field: str, value: Any, known: Mapping[str, Any]) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):  # the CLI's `a,b`
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"`{field}` must be a list of names (or null for any)", param=field)
    unknown = [v for v in value if v not in known]
    if unknown:
        raise BadRequest(f"`{field}`: {', '.join(map(repr, unknown))} not configured; one of: "
                         f"{', '.join(sorted(known))}", param=field)
    return sorted(set(value))


def _number(field: str, value: Any, integer: bool) -> int | float | None:
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or value < 0 or (integer and value == 0) or value != value:
        what = "a positive integer" if integer else "a number >= 0"
        raise BadRequest(f"`{field}` must be {what} (or null for no limit)", param=field)
    return value


FIELDS = ("name", "team", "admin", "routers", "models", "rpm", "tpm", "usd_day", "usd_month", "expires")


def key_fields(body: Any, config: Config, creating: bool, now: float | None = None) -> dict[str, Any]:
    """A key's fields checked against the config; BadRequest naming the first wrong field. Creating needs
    a `name` (not a config key's); updating takes any of the others."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object of key fields: " + ", ".join(FIELDS))
    unknown = [k for k in body if k not in FIELDS or (k == "name" and not creating)]
    if unknown:
        raise BadRequest(f"unknown field `{unknown[0]}`; the fields are: {', '.join(FIELDS[0 if creating else 1:])}",
                         param=str(unknown[0]))
    out: dict[str, Any] = {}
    if creating:
        name = body.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise BadRequest("`name` must be 1-64 letters, digits or `_.@:-`, starting with a letter or digit",
                             param="name")
        if name in {k.name for k in config.client_keys}:
            raise Conflict(f"`name`: {name!r} is a key of the config's client_keys; choose another name",
                           param="name", code="key_exists")
        out["name"] = name
    if "team" in body:
        team = body["team"]
        if team is not None and (not isinstance(team, str) or team not in config.teams):
            raise BadRequest(f"`team` must be one of the config's teams: {', '.join(sorted(config.teams)) or '(none)'}"
                             " (add it under `teams:`)", param="team")
        out["team"] = team
    if "admin" in body:
        if not isinstance(body["admin"], bool):
            raise BadRequest("`admin` must be true or false", param="admin")
        out["admin"] = body["admin"]
    for field, known in (("routers", config.routers), ("models", config.models)):
        if field in body:
            out[field] = _names(field, body[field], known)
    for field in ("rpm", "tpm", "usd_day", "usd_month"):
        if field in body:
            out[field] = _number(field, body[field], integer=field in ("rpm", "tpm"))
    if "expires" in body:
        try:
            out["expires"] = parse_expires(body["expires"], now)
        except ValueError as e:
            raise BadRequest(f"`expires` must be {e}", param="expires") from None
        if creating and out["expires"] is not None and out["expires"] <= (now or time.time()):
            raise BadRequest("`expires` is in the past", param="expires")
    return out


def create_key(store: TraceStore, config: Config, secret: bytes, body: Any, by: str) -> tuple[str, dict[str, Any]]:
    """Make a key: (the key, shown only now; its stored record)."""
    fields = key_fields(body, config, creating=True)
    token = new_key()
    now = time.time()
    record = {"team": None, "admin": False, "routers": None, "models": None, **fields, "prefix": shown(token),
              "created": now, "created_by": by, "updated": now}
    try:
        store.add_key(record, key_hash(secret, token))
    except KeyError:
        raise Conflict(f"`name`: a key named {fields['name']!r} exists (revoked keys keep their names)",
                       param="name", code="key_exists") from None
    stored = store.key(fields["name"])
    assert stored is not None
    return token, stored


def update_key(store: TraceStore, config: Config, name: str, body: Any) -> dict[str, Any]:
    """Change a key's team, routers, models, limits or expiry; replicas apply it within the cache interval."""
    fields = key_fields(body, config, creating=False)
    if not fields:
        raise BadRequest("nothing to update: give one of " + ", ".join(FIELDS[1:]))
    found = store.update_key(name, fields)
    if found is None:
        raise NotFound(f"no key named {name!r}", param="name", code="key_not_found")
    return found


def revoke_key(store: TraceStore, name: str, by: str) -> dict[str, Any]:
    """Revoke a key for good; every replica refuses it within the cache interval."""
    found = store.revoke_key(name, by)
    if found is None:
        raise NotFound(f"no key named {name!r}", param="name", code="key_not_found")
    return found


def state(record: Mapping[str, Any], now: float) -> str:
    """active, revoked or expired."""
    if record.get("revoked_at") is not None:
        return "revoked"
    expires = record.get("expires")
    return "expired" if expires is not None and expires <= now else "active"


def day_and_month_start(now: float) -> tuple[float, float]:
    """Unix times of the current UTC day's and month's starts (the budgets' periods)."""
    t = datetime.fromtimestamp(now, UTC)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp(), day.replace(day=1).timestamp()


def list_keys(store: TraceStore, now: float | None = None) -> list[dict[str, Any]]:
    """Every key (no hash, no key) with its state and its serving spend today and this month, from traces."""
    now = time.time() if now is None else now
    day, month = day_and_month_start(now)
    stored = store.stored_keys()
    if not stored:
        return []
    # Summed in SQL (TraceStore.client_spend: the traces' serving cost, TraceView.cost_usd as stored).
    today = {c: usd for c, _, usd, _ in store.client_spend(day)}
    this_month = {c: usd for c, _, usd, _ in store.client_spend(month)}
    return [{**r, "state": state(r, now), "spend_today_usd": today.get(r["name"], 0.0),
             "spend_month_usd": this_month.get(r["name"], 0.0)} for r in stored]


__all__ = ["KeyRing", "authenticate", "create_key", "key_fields", "list_keys", "parse_expires",
           "revoke_key", "state", "update_key"]
