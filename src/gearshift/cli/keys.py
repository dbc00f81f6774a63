"""`gearshift keys create|list|update|revoke`: virtual keys in the config's store (the checks and messages
of `/admin/keys`, gateway/keys.py)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click

from gearshift.cli import plan_or_exit
from gearshift.errors import ConfigError, GearshiftError

CONFIG = click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config file")


def _fields(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options a key's fields take (all optional: an update changes only those given)."""
    for decorator in reversed((
        click.option("--team", default=None, help="the team its spend counts to (one of the config's teams)"),
        click.option("--routers", default=None, help="routers it may name, comma-separated (default: any)"),
        click.option("--models", default=None, help="models it may name directly, comma-separated (default: any)"),
        click.option("--rpm", type=int, default=None, help="requests per minute"),
        click.option("--tpm", type=int, default=None, help="tokens per minute"),
        click.option("--usd-day", type=float, default=None, help="USD per UTC day"),
        click.option("--usd-month", type=float, default=None, help="USD per UTC month"),
        click.option("--expires", default=None, help="2027-01-01, an ISO time, or 30d / 12h from now"),
        click.option("--admin/--no-admin", default=None, help="may use /admin and write any trace's feedback"),
    )):
        f = decorator(f)
    return f


def _body(**options: Any) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _open(config_path: str) -> tuple[Any, Any, bytes]:
    """(config, store, server secret); exits 2 with the problem when virtual keys are off or misconfigured."""
    from gearshift import plan
    from gearshift.store import open_store

    config = plan_or_exit(config_path).config
    try:
        secret = plan.key_secret(config)
    except ConfigError as e:
        click.echo(f"{config_path}: {e}", err=True)
        sys.exit(2)
    if secret is None:
        click.echo(f"{config_path}: server.key_secret_env: not set, so virtual keys are off; fix: set it to the name "
                   "of an environment variable holding 32+ random characters", err=True)
        sys.exit(2)
    return config, open_store(config.store, config.base_dir), secret


def _fail(e: GearshiftError) -> None:
    click.echo(f"error: {e.message}", err=True)
    sys.exit(2)


def _limits(r: dict[str, Any]) -> str:
    parts = [f"{k} {r[k]:g}" for k in ("rpm", "tpm", "usd_day", "usd_month") if r.get(k) is not None]
    return ", ".join(parts) or "-"


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


@click.group("keys")
def keys_group() -> None:
    """Virtual keys: create (shown once), list, update, revoke. Needs server.key_secret_env."""


@keys_group.command("create")
@CONFIG
@click.option("--name", required=True, help="the key's name (traces and spend carry it)")
@click.option("--by", default="cli", show_default=True, help="who creates it (recorded)")
@_fields
def create(config_path: str, name: str, by: str, **options: Any) -> None:
    """Create a key and print it: the only time it is shown (the store keeps a hash)."""
    from gearshift.gateway.keys import create_key

    config, store, secret = _open(config_path)
    try:
        key, record = create_key(store, config, secret, {"name": name, **_body(**options)}, by)
    except GearshiftError as e:
        _fail(e)
    click.echo(f"created key {record['name']!r} (team {record['team'] or '-'}, limits {_limits(record)}, "
               f"expires {_when(record['expires'])}); it is shown only now:", err=True)
    click.echo(key)


@keys_group.command("list")
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="print the keys as JSON")
def list_command(config_path: str, as_json: bool) -> None:
    """Every key: team, prefix, limits, expiry, state, spend today and this month (no key, no hash)."""
    from gearshift.gateway.keys import list_keys

    _, store, _ = _open(config_path)
    found = list_keys(store)
    if as_json:
        import json

        click.echo(json.dumps(found, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="virtual keys")
    for col in ("name", "team", "prefix", "admin", "routers", "models", "limits", "expires (UTC)", "state",
                "today $", "month $", "created by"):
        table.add_column(col)
    for r in found:
        table.add_row(r["name"], r["team"] or "-", r["prefix"], "yes" if r["admin"] else "",
                      ",".join(r["routers"]) if r["routers"] is not None else "any",
                      ",".join(r["models"]) if r["models"] is not None else "any", _limits(r), _when(r["expires"]),
                      r["state"] + (f" by {r['revoked_by']}" if r["revoked_by"] else ""),
                      f"{r['spend_today_usd']:.6f}", f"{r['spend_month_usd']:.6f}", r["created_by"] or "-")
    Console(width=200).print(table)


@keys_group.command("update")
@CONFIG
@click.argument("name")
@_fields
def update(config_path: str, name: str, **options: Any) -> None:
    """Change a key's team, routers, models, limits or expiry (replicas apply it within server.key_cache_seconds)."""
    from gearshift.gateway.keys import update_key

    config, store, _ = _open(config_path)
    try:
        record = update_key(store, config, name, _body(**options))
    except GearshiftError as e:
        _fail(e)
    click.echo(f"updated key {name!r}: team {record['team'] or '-'}, limits {_limits(record)}, "
               f"expires {_when(record['expires'])}")


@keys_group.command("revoke")
@CONFIG
@click.argument("name")
@click.option("--by", default="cli", show_default=True, help="who revokes it (recorded)")
def revoke(config_path: str, name: str, by: str) -> None:
    """Revoke a key for good: every replica refuses it within server.key_cache_seconds."""
    from gearshift.gateway.keys import revoke_key

    config, store, _ = _open(config_path)
    try:
        record = revoke_key(store, name, by)
    except GearshiftError as e:
        _fail(e)
    click.echo(f"revoked key {name!r} (by {record['revoked_by']}); gateways refuse it within "
               f"{config.server.key_cache_seconds:g} s")


commands = [keys_group]
