"""The `gearshift` command."""

from __future__ import annotations

import sys

import click

from gearshift.errors import ConfigError


@click.group()
@click.version_option(package_name="gearshift")
def main() -> None:
    """gearshift: route each LLM request to the cheapest model that can handle it."""


@main.command("check-config")
@click.argument("path", type=click.Path(dir_okay=False))
def check_config(path: str) -> None:
    """Validate a config file without serving."""
    from gearshift.config import load_config

    try:
        config = load_config(path)
    except ConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(2)
    click.echo(f"{path}: ok: {len(config.models)} models, {len(config.routers)} routers, store {config.store.url}")


def _add_lazy_groups() -> None:
    # Subcommand groups live beside the code they drive; imported here so `gearshift --help` lists them.
    import importlib

    for module, attr in (
        ("gearshift.gateway.cli", "commands"),
        ("gearshift.lab.cli", "commands"),
        ("gearshift.demo", "commands"),
        ("gearshift.watch.cli", "commands"),
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue
            raise
        for cmd in getattr(mod, attr):
            main.add_command(cmd)


_add_lazy_groups()

if __name__ == "__main__":
    main()
