"""`gearshift serve`, `traces`, `prune` and `routers`."""

from __future__ import annotations

import sys

import click

from gearshift import logs
from gearshift.cli import config_or_exit as _load
from gearshift.cli import plan_or_exit


@click.command("serve")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config file")
@click.option("--host", default=None, help="override server.host")
@click.option("--port", default=None, type=int, help="override server.port")
@click.option("--workers", default=None, type=click.IntRange(1, 64), help="override server.workers (processes)")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--log-format", type=click.Choice(logs.FORMATS), default=None,
              help="text, or json: one object per line (default: server.log_format, else text)")
@click.option("--ui/--no-ui", "with_ui", default=True, show_default=True,
              help="serve the dashboard at /ui (admin keys sign in)")
@click.option("--reports", default=None, type=click.Path(file_okay=False),
              help="folder of lab reports (HTML) the dashboard lists")
def serve_command(config_path: str, host: str | None, port: int | None, workers: int | None, log_level: str,
                  log_format: str | None, with_ui: bool, reports: str | None) -> None:
    """Run the gateway (and its dashboard at /ui)."""
    logs.configure(log_level, log_format or "text")
    plan = plan_or_exit(config_path, serving=True)  # the same door as `check-config`
    if log_format is None and plan.config.server.log_format != "text":
        logs.configure(log_level, plan.config.server.log_format)
    from gearshift.gateway.server import serve

    routes = None
    if with_ui:
        from pathlib import Path

        from gearshift.ui import gateway_routes  # imported before workers fork: they share its session secret

        routes = gateway_routes(Path(reports) if reports else None)
    serve(plan, host, port, workers, routes)


@click.command("traces")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="config whose store and prices to use")
@click.option("--since", default=None, help="only traces newer than this many hours (e.g. 24)", type=float)
@click.option("--by", type=click.Choice(["key", "team"]), default=None,
              help="per key or per team: requests, spend, savings, quality retained on shadow pairs")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def traces_command(config_path: str | None, since: float | None, by: str | None, as_json: bool) -> None:
    """Summarise stored traces: requests, spend by model, savings against always-strongest (estimate)."""
    from gearshift.gateway.summary import print_by, print_summary, summarise, summarise_by
    from gearshift.store import open_store

    if not config_path:
        raise click.UsageError("--config is required (it names the store and the model prices)")
    config = _load(config_path)
    store = open_store(config.store, config.base_dir)
    import time

    rows = list(store.traces(since=time.time() - since * 3600 if since else None))
    if by is not None:
        groups = summarise_by(rows, config, by)
        if as_json:
            import json

            click.echo(json.dumps(groups, indent=2))
        else:
            print_by(groups, by)
        return
    summary = summarise(rows, config)
    if as_json:
        import json

        click.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary)


@click.command("prune")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--older-than-days", type=click.FloatRange(min=0, min_open=True), default=None,
              help="default: the config's store.retention_days")
def prune_command(config_path: str, older_than_days: float | None) -> None:
    """Delete traces (with their calls and shadow pairs) and feedback older than some days."""
    import time

    from gearshift.store import open_store

    config = _load(config_path)
    days = older_than_days or config.store.retention_days
    if days is None:
        raise click.UsageError("give --older-than-days, or set store.retention_days in the config")
    store = open_store(config.store, config.base_dir)
    n = store.prune(time.time() - days * 86400)
    click.echo(f"deleted {n} traces older than {days:g} days; {store.count()} remain")


@click.group("routers")
def routers_group() -> None:
    """Router versions: list them, promote one (the gateway applies it within seconds)."""


@routers_group.command("list")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--router", default=None)
def routers_list(config_path: str, router: str | None) -> None:
    """Every stored version with its threshold, metrics, and who promoted it."""
    from rich.console import Console
    from rich.table import Table

    from gearshift.store import open_store

    config = _load(config_path)
    store = open_store(config.store, config.base_dir)
    table = Table(title="router versions")
    for col in ("router", "version", "created", "by", "settings", "metrics", "active", "promoted by"):
        table.add_column(col)
    import json
    import time

    for v in store.router_versions(router):
        proof = v["metrics"].get("proof") if isinstance(v["metrics"], dict) else None
        # A proof's one line says what it showed (observing 312/500, no signal, proven ...).
        shown = proof["reason"] if isinstance(proof, dict) and "reason" in proof else json.dumps(v["metrics"], default=str)[:80]
        table.add_row(v["router"], str(v["version"]), time.strftime("%Y-%m-%d %H:%M", time.localtime(v["created"])),
                      v["created_by"], json.dumps(v["settings"]), shown,
                      "yes" if v["active"] else "", v["promoted_by"] or "")
    Console(width=160).print(table)


@routers_group.command("promote")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.argument("router")
@click.argument("version", type=int)
@click.option("--by", required=True, help="who promotes it (recorded)")
def routers_promote(config_path: str, router: str, version: int, by: str) -> None:
    """Make VERSION the active version of ROUTER."""
    from gearshift.store import open_store

    config = _load(config_path)
    store = open_store(config.store, config.base_dir)
    try:
        store.promote(router, version, by)
    except KeyError as e:
        click.echo(f"error: {e.args[0]}", err=True)
        sys.exit(2)
    click.echo(f"{router}: version {version} promoted by {by}; running gateways apply it at their next poll")


commands = [serve_command, traces_command, routers_group]
