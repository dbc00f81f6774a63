"""`gearshift watch`: the current window of traces against the baseline, with drift alerts."""

from __future__ import annotations

import json
import sys
import time

import click

from gearshift.errors import ConfigError


def _fmt(v: float | None, name: str = "") -> str:
    if v is None:
        return "-"
    if name.endswith("_ms"):
        return f"{v:.1f}"
    return f"{v:.3f}"


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@click.command("watch")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config file")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="the most recent N traces (default: watch.window_requests)")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="only traces newer than this many seconds (default: watch.window_seconds)")
@click.option("--router", default=None, help="only this router's traces (default: watch.router, else all)")
@click.option("--baseline", "baseline_path", type=click.Path(dir_okay=False), default=None,
              help="baseline JSON (default: watch.baseline, else the oldest N traces in the store)")
@click.option("--save-baseline", "save_path", type=click.Path(dir_okay=False), default=None,
              help="write the current window as a baseline JSON to this file and exit")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--exit-code", is_flag=True, help="exit with status 1 when a metric drifted")
def watch_command(config_path: str, window: int | None, seconds: float | None, router: str | None,
                  baseline_path: str | None, save_path: str | None, as_json: bool, exit_code: bool) -> None:
    """Compare the recent traces with the baseline: rates, spend, latency, input shift (PSI)."""
    from gearshift import plan
    from gearshift.store import open_store
    from gearshift.watch.drift import Baseline, Watch
    from gearshift.watch.loop import load_baseline, store_baseline
    from gearshift.watch.windows import recent_traces

    try:
        config = plan.load(config_path, serving=False).config
        overrides = {k: v for k, v in (("window_requests", window), ("window_seconds", seconds),
                                       ("router", router)) if v is not None}
        config = config.model_copy(update={"watch": config.watch.model_copy(update=overrides)})
        wc = config.watch
        if wc.router and wc.router not in config.routers and wc.router != "direct":
            click.echo(f"note: router {wc.router!r} is not configured; known: {sorted(config.routers)}", err=True)
        store = open_store(config.store, config.base_dir)
        traces = recent_traces(store, wc.window_requests, wc.window_seconds, wc.router)
        if save_path:
            if not traces:
                raise click.ClickException("no traces in the window: nothing to save as a baseline")
            b = Baseline.from_traces(traces, config, source=f"{len(traces)} traces, {_when(traces[0]['created'])}"
                                     f" to {_when(traces[-1]['created'])}" + (f", router {wc.router}" if wc.router else ""))
            b.save(save_path)
            click.echo(f"baseline of {b.n} traces written to {save_path}")
            return
        baseline = load_baseline(config, baseline_path)
        if baseline is None:
            baseline, _ = store_baseline(store, config)
        if baseline is None:
            raise click.ClickException(
                f"no baseline: give --baseline FILE or watch.baseline, or store at least "
                f"watch.min_requests ({wc.min_requests}) traces")
        report = Watch(config).check(traces, baseline)
    except ConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print(report)
    if exit_code and report.drifted:
        sys.exit(1)


def _print(report) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    from gearshift.watch.drift import DRIFT, OK

    console = Console()
    console.print(f"window: [bold]{report.window_n}[/] traces"
                  + (f" of router {report.router}" if report.router else "")
                  + f", {_when(report.window_start)} to {_when(report.window_end)}; "
                  f"baseline: {report.baseline_source} ({report.baseline_n} traces)")
    table = Table()
    for col, justify in (("metric", "left"), ("window", "right"), ("baseline", "right"), ("bound", "right"),
                         ("n", "right"), ("status", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for m in report.metrics:
        value = _fmt(m.value, m.name)
        if m.lower is not None:
            value += f" [{_fmt(m.lower)}, {_fmt(m.upper)}]"
        bound = {"abs change": "±", "rise": "+", "drop": "-", "ratio": "x", "floor": ">= ", "psi": "<= "}[m.rule]
        colour = {DRIFT: "bold red", OK: "green"}.get(m.status, "yellow")
        table.add_row(m.name, value, _fmt(m.baseline, m.name), "-" if m.bound is None else f"{bound}{m.bound:g}",
                      str(m.n), f"[{colour}]{m.status}[/]")
    console.print(table)
    sp = report.spend
    if sp.get("always_reference_estimate"):
        console.print(f"spend ${sp['serving']:.6f} vs always-reference ${sp['always_reference_estimate']:.6f} "
                      f"(estimate); shadow ${sp['shadow']:.6f}")
    for message in report.alerts:
        console.print(f"[bold red]DRIFT[/] {message}")
    if not report.alerts:
        console.print("no drift past the configured bounds")


commands = [watch_command]
