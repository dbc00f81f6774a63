"""`gearshift datasets ...` and `gearshift lab ...` (the lab group is shared: others add commands to it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from gearshift.cli.outcomes import (
    bootstrap_options,
    drop_contaminated_option,
    load_outcomes,
    price_table,
    prices_option,
)


@click.group("datasets")
def datasets_group() -> None:
    """Recorded benchmark outcomes: list, locate and download them."""


@datasets_group.command("list")
def datasets_list() -> None:
    """The datasets the downloader knows and whether each is complete in the data folder."""
    from rich.console import Console
    from rich.table import Table

    from gearshift.outcomes.datasets import data_dir
    from gearshift.outcomes.fetch import DATASETS, files, status

    table = Table(title=f"datasets in {data_dir()}")
    for col in ("name", "files", "MB", "state"):
        table.add_column(col)
    for name in DATASETS:
        states = status(name)
        bad = [s for _, s in states if s != "ok"]
        state = "ok" if not bad else ", ".join(f"{bad.count(s)} {s}" for s in sorted(set(bad)))
        table.add_row(name, str(len(states)), f"{sum(e.size for e in files(name)) / 1e6:.1f}", state)
    Console().print(table)


@datasets_group.command("path")
@click.argument("name", required=False)
def datasets_path(name: str | None) -> None:
    """Print the data folder (or a dataset's folder in it)."""
    from gearshift.outcomes.datasets import data_dir

    root = data_dir()
    click.echo(str(root / name) if name and name != "all" else str(root))


@datasets_group.command("split")
@click.argument("specs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="outcomes file to write (.csv or .jsonl)")
@click.option("--parts", default="train=0.6,calibrate=0.2,test=0.2", show_default=True,
              help="name=share, comma-separated: the parts to deal the prompts into")
@click.option("--by", default=None, help="metadata key (e.g. task) whose values every part should mix alike")
@click.option("--seed", default=0, show_default=True, type=int)
@drop_contaminated_option
def datasets_split(specs: tuple[str, ...], out: str, parts: str, by: str | None, seed: int,
                   drop_contaminated: bool) -> None:
    """Deal an outcomes table's prompts into parts (a `split` column), so training, calibration and
    testing never share a prompt: then `lab train --split train`, `lab calibrate --split calibrate`."""
    from gearshift.outcomes.files import write_outcomes
    from gearshift.outcomes.table import assign_parts

    shares: dict[str, float] = {}
    for item in parts.split(","):
        name, _, share = item.partition("=")
        try:
            shares[name.strip()] = float(share)
        except ValueError:
            raise click.UsageError(f"--parts {item!r}: write name=share, e.g. train=0.6,calibrate=0.2,test=0.2") from None
    o = load_outcomes(specs, drop_contaminated=drop_contaminated)
    if "split" in o.meta:
        click.echo(f"note: {o.name} has a split column already; it is replaced", err=True)
    try:
        o = assign_parts(o, shares, seed=seed, by=by)
    except (ValueError, KeyError) as e:
        raise click.UsageError(str(e.args[0])) from None
    write_outcomes(o, out)
    counts = {n: int((o.meta["split"] == n).sum()) for n in shares}
    click.echo(f"wrote {out}: {len(o)} prompts of {o.name} in parts "
               + ", ".join(f"{n} {c}" for n, c in counts.items()))
    first = next(iter(shares))
    click.echo(f"next: gearshift lab train --outcomes {out} --split {first} --out router.json")


@datasets_group.command("fetch")
@click.argument("name")
@click.option("--base-url", default=None, help="a mirror laid out like the data folder (default: the public sources)")
@click.option("--dest", type=click.Path(file_okay=False), default=None, help="folder to fill (default: the data folder)")
def datasets_fetch(name: str, base_url: str | None, dest: str | None) -> None:
    """Download a dataset's files, verifying each against its recorded SHA-256."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from gearshift.outcomes import datasets
    from gearshift.outcomes.fetch import FetchError, files

    try:
        entries = files(name)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    total = sum(e.size for e in entries)
    done: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()) as bar:
        task = bar.add_task(f"fetch {name}", total=total)

        def progress(entry, received: int) -> None:  # type: ignore[no-untyped-def]
            done[entry.path] = received
            bar.update(task, completed=sum(done.values()))

        try:
            paths = datasets.fetch(name, dest=dest, base_url=base_url, progress=progress)
        except FetchError as e:
            bar.stop()
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        bar.update(task, completed=total)
    datasets.clear_cache()
    click.echo(f"{name}: {len(paths)} files verified in {Path(dest) if dest else datasets.data_dir()}")


@click.group("lab")
def lab_group() -> None:
    """Offline evaluation, training and calibration of routers on recorded outcomes."""


def _cell(est, scale: float = 1.0, spec: str = ".3f", prefix: str = "", suffix: str = "") -> str:  # type: ignore[no-untyped-def]
    """Value on the first line, the interval under it: keeps the table narrow."""
    if est is None:
        return "-"
    v, lo, hi = (x * scale for x in (est.value, est.low, est.high))
    return f"{prefix}{v:{spec}}{suffix}\n[dim]{lo:{spec}}-{hi:{spec}}[/dim]"


def _configured(config_path: str, names: list[str]):  # type: ignore[no-untyped-def]
    from gearshift.cli import config_or_exit
    from gearshift.plan import build_routers

    config = config_or_exit(config_path)
    built = build_routers(config)
    missing = [n for n in names if n not in built]
    if missing:
        raise click.UsageError(f"routers {missing} are not in {config_path}; it has {sorted(built)}")
    columns = {m: mc.replay.column for m, mc in config.models.items() if mc.replay is not None}
    return [built[n] for n in names], columns


@lab_group.command("evaluate")
@click.option("--outcomes", "specs", required=True, multiple=True,
              help="dataset name (routellm/gsm8k, routellm/mmlu, routerbench[/task]) or outcomes file; "
                   "repeat to evaluate on several, one after another")
@prices_option
@click.option("--router", "router_names", multiple=True,
              help="random and oracle are always shown; other names are routers of --config (repeatable)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="config holding --router routers")
@drop_contaminated_option
@click.option("--weak", default=None, help="weak model column (default: the cheaper/worse one)")
@click.option("--strong", default=None, help="strong model column (default: the best one)")
@bootstrap_options
@click.option("--seed", default=0, show_default=True, type=int, help="bootstrap seed")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
def lab_evaluate(specs: tuple[str, ...], prices: tuple[str, ...], router_names: tuple[str, ...], config_path: str | None, drop_contaminated: bool,
                 weak: str | None, strong: str | None, n_boot: int, seed: int, alpha: float, as_json: bool) -> None:
    """Always-weak, always-strong, random, oracle (and your routers): quality, cost, APGR, CPT."""
    import numpy as np
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
    from rich.table import Table

    from gearshift.lab import metrics
    from gearshift.lab.evaluate import default_pair, evaluate_pair

    console = Console(stderr=as_json)
    extra = [n for n in router_names if n not in ("random", "oracle")]
    routers, columns = [], {}
    if extra:
        if not config_path:
            raise click.UsageError(f"--router {extra[0]} needs --config (only random and oracle are built in)")
        routers, columns = _configured(config_path, extra)
    with console.status(f"loading {', '.join(specs)}"):
        outcomes = load_outcomes(specs, drop_contaminated=drop_contaminated, named=(weak, strong),
                                 prices=price_table(prices, config_path))
    spec = outcomes.name
    dw, ds = default_pair(outcomes) if weak is None or strong is None else (weak, strong)
    weak_m, strong_m = weak or dw, strong or ds
    for m in (weak_m, strong_m):
        if m not in outcomes.models:
            raise click.UsageError(f"model {m!r} is not in {spec}; it has {outcomes.models}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console,
                  transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        rows = evaluate_pair(outcomes, weak_m, strong_m, routers, columns=columns, n_boot=n_boot, seed=seed,
                             alpha=alpha, progress=progress)
    n = next(r.curve.n for r in rows if r.curve is not None)  # prompts with both qualities
    if as_json:
        def est(e):  # type: ignore[no-untyped-def]
            return None if e is None else {"value": e.value, "low": e.low, "high": e.high}

        click.echo(json.dumps({"outcomes": outcomes.name, "weak": weak_m, "strong": strong_m, "alpha": alpha,
                               "n_boot": n_boot, "cost_estimated": outcomes.cost_estimated,
                               "rows": [{"name": r.name, "kind": r.kind, "strong_share": est(r.strong_share),
                                         "quality": est(r.quality), "cost": est(r.cost), "savings": r.savings,
                                         "quality_retained": r.quality_retained, "apgr": est(r.apgr),
                                         "cpt50": est(r.cpt50), "cpt80": est(r.cpt80),
                                         "interval": f"5-95% of {r.band.draws} draws" if r.band else "bootstrap"}
                                        for r in rows]}, indent=2))
        return
    conf = f"{1 - alpha:.0%}"
    table = Table(title=f"{outcomes.name}: {len(outcomes)} prompts, weak {weak_m}, strong {strong_m}",
                  caption=f"value, and under it its {conf} bootstrap interval ({n_boot} resamples over prompts); "
                          f"savings and retained are against always-strong; random: its expected value (the "
                          f"diagonal), under it the 5-95% band of {rows[2].band.draws if rows[2].band else 0} seeded draws"
                          + ("; costs are estimates" if outcomes.cost_estimated else ""),
                  title_justify="left", caption_justify="left")
    for col in ("router", "strong\ncalls", "quality", "$ per 1k\nrequests", "savings", "quality\nretained",
                "APGR", "CPT(50%)", "CPT(80%)"):
        table.add_column(col, justify="left" if col == "router" else "right")
    names = {rows[0].name: "always weak", rows[1].name: "always strong", "random": "random (expected)"}
    for r in rows:
        table.add_row(names.get(r.name, r.name), _cell(r.strong_share, 100, ".1f", suffix="%"),
                      _cell(r.quality), _cell(r.cost, 1000, ".3f", prefix="$"), f"{r.savings + 0.0:.1%}",
                      f"{r.quality_retained:.1%}", _cell(r.apgr), _cell(r.cpt50, 100, ".1f", suffix="%"),
                      _cell(r.cpt80, 100, ".1f", suffix="%"))
    console.print(table)
    if len(outcomes.models) > 2:
        mc, mq = metrics.model_points(outcomes)
        hc, hq = metrics.zero_router(outcomes)
        oracle = metrics.oracle_decisions(outcomes)
        lo, hi = float(mc.min()), float(mc.max())
        console.print(f"all {len(outcomes.models)} models: zero-router AIQ {metrics.aiq(mc, mq, (lo, hi)):.4f} over cost "
                      f"[${lo:.6f}, ${hi:.6f}]; oracle (cheapest right model) quality {np.nanmean(oracle.quality):.4f} "
                      f"at ${np.nanmean(oracle.cost):.6f}/request")
    if rows[1].quality.value <= rows[0].quality.value:
        console.print(f"warning: {strong_m} is not better than {weak_m} on these prompts, so there is no gap to "
                      "recover: PGR, APGR and CPT are not meaningful; swap --weak and --strong?")
    if n != len(outcomes):
        console.print(f"note: {len(outcomes) - n} prompts without a quality for {weak_m} or {strong_m} were left out")


@lab_group.command("simulate")
@click.option("--outcomes", "spec", required=True, help="the stream: a dataset name or an outcomes file")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="gateway config: replay models (their columns are read from --outcomes) and the router")
@click.option("--router", "router", default=None, help="router to simulate (default: the one in `mode: observe`)")
@click.option("--seeds", default=20, show_default=True, type=click.IntRange(1), help="runs, each its own shuffle")
@click.option("--limit", default=None, type=click.IntRange(1), help="requests per run (default: every prompt)")
@click.option("--per-hour", default=100.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="requests per simulated hour (the proof schedule runs on this clock)")
@click.option("--judge-agreement", default=None, type=click.FloatRange(0, 1),
              help="score each pair by a judge that agrees with the recorded truth at this rate")
@click.option("--floor", default=None, type=click.FloatRange(0, 1, min_open=True),
              help="floor of coverage (default: the router's proof floor)")
@click.option("--json", "json_path", default="simulation.json", show_default=True, type=click.Path(dir_okay=False))
@click.option("--plot", "plot_path", default="simulation.png", show_default=True, type=click.Path(dir_okay=False))
def lab_simulate(spec: str, config_path: str, router: str | None, seeds: int, limit: int | None, per_hour: float,
                 judge_agreement: float | None, floor: float | None, json_path: str, plot_path: str) -> None:
    """Replay a router's life (observe, shadow, prove, promote, watch, demote) over a recorded stream,
    through the gateway's own code, once per seed; print cost, quality and floor coverage."""
    import logging

    from gearshift.config import read_yaml
    from gearshift.sim import simulate

    logging.basicConfig(level=logging.ERROR)
    outcomes = load_outcomes([spec])
    base = Path(config_path).resolve().parent
    try:
        sim = simulate(read_yaml(config_path), outcomes, base_dir=base, router=router, seeds=range(seeds),
                       judge_agreement=judge_agreement, per_hour=per_hour, floor=floor, limit=limit,
                       stream_name=spec, progress=click.echo)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    s = sim.summary()
    click.echo(f"{sim.router} on {spec}: {s['seeds']} runs; promoted in {s['promoted_runs']}, demotions "
               f"{s['demotions']}; floor coverage at {sim.floor:.0%}: {s['floor_coverage']:.0%}")
    for r in sim.runs:
        x = r.summary(sim.floor)
        f = x["first_promotion"]
        changes = [e for e in x["events"] if e["kind"] != "retrained"]  # the first is the first promotion
        click.echo(f"  seed {r.seed}: cost {x['serving_usd']:.4f} + shadow {x['shadow_usd']:.4f} vs always-strong "
                   f"{x['always_strong_usd']:.4f} (savings {x['savings']:.1%}, net {x['net_savings']:.1%}); quality "
                   f"{x['quality_share']:.1%} of always-strong; " + (
                       f"promoted at hour {f['hours']:.0f} after {f['pairs']} pairs (${f['shadow_usd']:.4f} shadow), "
                       f"then quality {f['quality_share_after']:.1%}, savings {f['savings_after']:.1%}" if f
                       else "never promoted") + "".join(f"; {e['kind']} at hour {e['hours']:.0f}"
                                                        for e in changes[1 if f else 0:]))
    for p in sim.write(json_path, plot_path):
        click.echo(f"wrote {p}")


def _load_lab_commands() -> None:
    # The lab's other command modules add subcommands by decorating lab_group.
    import gearshift.cli.cascade
    import gearshift.cli.ops
    import gearshift.cli.report
    import gearshift.cli.train  # noqa: F401


commands = [datasets_group, lab_group]
_load_lab_commands()
