"""`gearshift ui`: the dashboard alone, over a config's store (no gateway needed)."""

from __future__ import annotations

from pathlib import Path

import click

from gearshift.cli import config_or_exit


@click.command("ui")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="config whose store, prices and admin keys to use")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8081, show_default=True, type=int)
@click.option("--reports", default=None, type=click.Path(file_okay=False), help="folder of lab reports (HTML) to list")
def ui_command(config_path: str, host: str, port: int, reports: str | None) -> None:
    """Serve the dashboard at /ui, reading the store alone (every replica's traffic)."""
    from aiohttp import web

    from gearshift.store import open_store
    from gearshift.ui import standalone

    config = config_or_exit(config_path)
    if not any(k.admin for k in config.client_keys) and config.server.key_secret_env is None:
        click.echo("note: no client key has `admin: true` and virtual keys are off, so nobody can sign in; add one "
                   "to client_keys, or set server.key_secret_env and `gearshift keys create --admin`", err=True)
    store = open_store(config.store, config.base_dir)
    click.echo(f"gearshift dashboard on http://{host}:{port}/ui")
    web.run_app(standalone(config, store, Path(reports) if reports else None), host=host, port=port, print=None)
