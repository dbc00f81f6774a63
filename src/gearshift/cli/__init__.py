"""The `gearshift` command. Subcommands load on use, so `gearshift serve` starts without the lab."""

from __future__ import annotations

import importlib
import json
import sys
from typing import TYPE_CHECKING

import click

from gearshift.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from gearshift.config import Config
    from gearshift.plan import Plan

# name -> "module:attribute"; each subcommand lives beside the code it drives.
COMMANDS = {
    "serve": "gearshift.cli.gateway:serve_command",
    "traces": "gearshift.cli.gateway:traces_command",
    "routers": "gearshift.cli.gateway:routers_group",
    "prune": "gearshift.cli.gateway:prune_command",
    "demo": "gearshift.demo:demo_command",
    "datasets": "gearshift.cli.lab:datasets_group",
    "lab": "gearshift.cli.lab:lab_group",
    "watch": "gearshift.cli.watch:watch_command",
    "keys": "gearshift.cli.keys:keys_group",
    "ui": "gearshift.cli.ui:ui_command",
}


def plan_or_exit(path: str, serving: bool = False) -> Plan:
    """Load, check and build a config (gearshift.plan.load, the one door for every command);
    a bad one prints the problems and exits 2 (no traceback). `serve` and `check-config` pass
    serving=True: only they need the secrets a gateway serves with."""
    from gearshift import plan, telemetry  # the routers' modules: loaded only by commands that read a config

    try:
        if serving:  # tracing asked for by OTEL_* variables but impossible: refused like a bad config
            telemetry.check()
        return plan.load(path, serving)
    except ConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(2)


def config_or_exit(path: str) -> Config:
    """The checked config of a file (see plan_or_exit)."""
    return plan_or_exit(path).config


class LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except StoreError as e:
            # An unreachable store is an operator's problem to fix, not a traceback to read.
            click.echo(f"error: {e}", err=True)
            sys.exit(2)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            cmd = getattr(importlib.import_module(module), attr)
        except (ModuleNotFoundError, AttributeError) as e:
            # A command whose module is not there (an optional part) is hidden, not a crash.
            if isinstance(e, ModuleNotFoundError) and e.name != module:
                raise
            return None
        return cmd  # type: ignore[no-any-return]


@click.group(cls=LazyGroup)
@click.version_option(package_name="gearshift")
def main() -> None:
    """gearshift: route each LLM request to the cheapest model that can handle it."""


@main.command("check-config")
@click.argument("path", type=click.Path(dir_okay=False))
def check_config(path: str) -> None:
    """Validate a config file without serving: the same checks, and the same messages, as `serve`."""
    config = plan_or_exit(path, serving=True).config
    from gearshift.store import redact_url

    click.echo(f"{path}: ok: {len(config.models)} models, {len(config.routers)} routers, "
               f"store {redact_url(config.store.url)}")




@main.command("config-schema")
def config_schema() -> None:
    """Print the config file's JSON Schema (for editors), with every router and gate kind's options."""
    from gearshift.schema import config_schema as schema

    click.echo(json.dumps(schema(), indent=2))
