"""`gearshift lab report` (one self-contained HTML file and its PNGs) and `gearshift lab check`
(the decision check). Joins the lab group through lab/cli.py's import of *_cli modules."""

from __future__ import annotations

import json
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from gearshift.cli.lab import lab_group
from gearshift.cli.outcomes import bootstrap_options, drop_contaminated_option

BUILTIN = ("random", "oracle")  # always in the report


from gearshift.cli import config_or_exit as _load_config  # noqa: E402


def _routers(config: Any, names: list[str], weak: str, strong: str, columns: dict[str, str]) -> list[Any]:
    """Routers by name: `length` is the built-in baseline, the others come from the config."""
    from gearshift.lab.baselines import BUILTIN_BASELINES, baseline
    from gearshift.plan import build_routers

    built = build_routers(config) if config is not None else {}
    inverse = {v: k for k, v in columns.items()}
    if not names:
        # None named: every router of the config that routes between this pair (cascades have their own section).
        pair = {weak, strong}
        names = [n for n, r in built.items() if r.kind != "cascade" and r.models()
                 and {columns.get(m, m) for m in r.models()} <= pair]
    out: list[Any] = []
    for n in names:
        if n in BUILTIN:
            continue
        if n in BUILTIN_BASELINES:
            # Named in the config's model names when the config maps them to columns.
            out.append(baseline(n, inverse.get(weak, weak), inverse.get(strong, strong)))
        elif n in built:
            out.append(built[n])
        elif config is None:
            raise click.UsageError(f"--router {n} needs --config (built in: {', '.join(BUILTIN + BUILTIN_BASELINES)})")
        else:
            raise click.UsageError(f"router {n!r} is not in the config; it has {sorted(built)} "
                                   f"(built in: {', '.join(BUILTIN + BUILTIN_BASELINES)})")
    return out


@contextmanager
def _progress(console: Any) -> Iterator[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield progress


KEY_OPTION = click.option("--key", "key", default=None,
                          help="only the traces of this client key (its name: a config or a virtual key)")


def _source(spec: str | None, config_path: str | None, drop_contaminated: bool, console: Any,
            key: str | None = None) -> tuple[Any, Any, list[dict[str, Any]], Any]:
    """(outcomes, config, traces, store): outcomes from --outcomes, else the shadow pairs of the config's traces
    (only `key`'s, when given)."""
    from gearshift.outcomes import datasets

    if not spec and not config_path:
        raise click.UsageError("give --outcomes SPEC (a dataset or outcomes file) or --config FILE (its trace store)")
    config = _load_config(config_path) if config_path else None
    if spec:
        with console.status(f"loading {spec}"):
            try:
                base = config.base_dir if config is not None else "."
                return datasets.load(spec, base_dir=base, drop_contaminated=drop_contaminated), config, [], None
            except (ValueError, FileNotFoundError) as e:
                raise click.UsageError(str(e)) from None
    from gearshift.store import open_store

    assert config is not None and config_path is not None
    store = open_store(config.store, config.base_dir)
    with console.status(f"reading traces from {config.store.url}"):
        traces = list(store.traces())
    if key is not None:
        traces = [t for t in traces if t.get("client") == key]
    if not traces:
        raise click.UsageError(f"the trace store {config.store.url} holds no traces"
                               + (f" of the key {key!r}" if key is not None else ""))
    try:
        outcomes = datasets.from_traces(traces, min_models=2, name=f"traces ({Path(config_path).name})")
    except ValueError:
        outcomes = None
    return outcomes, config, traces, store


def _pair(outcomes: Any, weak: str | None, strong: str | None) -> tuple[str, str] | None:
    """The weak/strong pair to report on, or None when no prompt is graded for two models."""
    import numpy as np

    from gearshift.lab.evaluate import default_pair

    if outcomes is None:
        return None
    try:
        with warnings.catch_warnings():  # a model never graded in the traces has an all-NaN mean: said below
            warnings.simplefilter("ignore", RuntimeWarning)
            dw, ds = default_pair(outcomes) if weak is None or strong is None else (weak, strong)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    weak, strong = weak or dw, strong or ds
    for m in (weak, strong):
        if m not in outcomes.models:
            raise click.UsageError(f"model {m!r} is not in {outcomes.name}; it has {outcomes.models}")
    graded = ~np.isnan(outcomes.quality[:, [outcomes.index(weak), outcomes.index(strong)]]).any(axis=1)
    return (weak, strong) if graded.any() else None


def _levels(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: give fractions separated by commas, e.g. 0.9,0.95,0.99") from None
    if not vals or any(not 0 < v <= 1 for v in vals):
        raise click.BadParameter(f"{text!r}: each level must be in (0, 1]")
    return vals


@lab_group.command("report")
@click.option("--outcomes", "spec", default=None,
              help="dataset (routellm/gsm8k, routellm/mmlu, routerbench[/task]) or outcomes file; default: the traces of --config")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="config: its routers for --router, and its trace store when --outcomes is not given")
@click.option("--router", "router_names", multiple=True,
              help="random and oracle are always shown; `length` is a built-in baseline; others are routers of --config "
                   "(default: every router of --config that routes between --weak and --strong)")
@drop_contaminated_option
@click.option("--weak", default=None, help="weak model column (default: the cheapest, or the worse of two)")
@click.option("--strong", default=None, help="strong model column (default: the best)")
@click.option("--levels", "levels_text", default="0.90,0.95,0.99", show_default=True,
              help="quality levels (fractions of always-strongest quality) for the savings table")
@bootstrap_options
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", "out_path", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="the HTML file; the PNGs are written beside it as <name>-<plot>.png")
@KEY_OPTION
def lab_report(spec: str | None, config_path: str | None, router_names: tuple[str, ...], drop_contaminated: bool,
               weak: str | None, strong: str | None, levels_text: str, n_boot: int, seed: int, alpha: float,
               out_path: str, key: str | None) -> None:
    """Write one self-contained HTML report (plots embedded) with the PNGs beside it."""
    from rich.console import Console

    from gearshift.lab.report import build_report, cascade_records_from_traces, cascade_report, write_report

    t0 = time.perf_counter()
    levels = _levels(levels_text)
    console = Console(stderr=True)
    outcomes, config, traces, _ = _source(spec, config_path, drop_contaminated, console, key)
    cascades = []
    for name in sorted({str(t.get("router")) for t in traces if t.get("router")}):
        rec = cascade_records_from_traces(traces, router=name)
        if rec is not None:
            cascades.append(rec)
    command = shlex.join(["gearshift", *sys.argv[1:]])
    pair = _pair(outcomes, weak, strong)
    if pair is None:
        if not cascades:
            raise click.UsageError("the traces hold no prompt graded for two models (shadow pairs) and no cascade "
                                   "requests: enable shadow sampling, or report on --outcomes")
        with _progress(console) as progress:
            report = cascade_report(cascades, f"traces ({Path(str(config_path)).name})", n_boot=n_boot, seed=seed,
                                    alpha=alpha, note="no prompt was graded for two models (shadow pairs): the "
                                    "cost-quality sections need shadow sampling or --outcomes")
            report.count_cache(traces)
            paths = write_report(report, out_path, command=command, progress=progress)
    else:
        weak, strong = pair
        columns = {} if traces or config is None else {
            m: mc.replay.column for m, mc in config.models.items() if mc.replay is not None}
        routers = _routers(config, list(router_names), weak, strong, columns)
        with _progress(console) as progress:
            try:
                report = build_report(outcomes, weak, strong, routers, columns=columns, levels=levels, n_boot=n_boot,
                                      seed=seed, alpha=alpha, cascades=cascades, progress=progress)
            except ValueError as e:
                raise click.UsageError(str(e)) from None
            report.count_cache(traces)
            paths = write_report(report, out_path, command=command, progress=progress)
    console.print(f"wrote {paths[0]} ({paths[0].stat().st_size / 1e6:.1f} MB, self-contained) and "
                  f"{len(paths) - 1} PNGs beside it in {time.perf_counter() - t0:.1f} s")
    click.echo(str(paths[0]))


@lab_group.command("check")
@click.option("--outcomes", "spec", default=None, help="dataset or outcomes file to check")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="config: its trace store and feedback (when --outcomes is not given) and its routers")
@click.option("--floor", default=0.95, show_default=True, type=click.FloatRange(0.0, 1.0, min_open=True),
              help="quality floor: the fraction of always-strongest quality to keep")
@click.option("--router", "router_names", multiple=True,
              help="candidate routers of --config (default: every scoring router in it); random and length always")
@drop_contaminated_option
@click.option("--weak", default=None, help="the cheap model (default: the cheapest, or the one with most pairs)")
@click.option("--strong", default=None, help="the always-expensive reference (default: the best)")
@bootstrap_options
@click.option("--seed", default=0, show_default=True, type=int, help="seed of the halves and the bootstrap")
@click.option("--json", "as_json", is_flag=True, help="print the answers as JSON")
@KEY_OPTION
def lab_check(spec: str | None, config_path: str | None, floor: float, router_names: tuple[str, ...],
              drop_contaminated: bool, weak: str | None, strong: str | None, n_boot: int, seed: int, alpha: float,
              as_json: bool, key: str | None) -> None:
    """Should this traffic be routed? Baseline, shadow data, measurability, volume, calibrated savings."""
    from rich.console import Console

    from gearshift.lab.check import check_outcomes, check_traces, print_check
    from gearshift.lab.evaluate import default_pair

    console = Console(stderr=as_json)
    outcomes, config, traces, store = _source(spec, config_path, drop_contaminated, console, key)
    routers: list[Any] = []
    if config is not None:
        from gearshift.plan import build_routers

        built = build_routers(config)
        missing = [n for n in router_names if n not in built and n not in ("random", "length")]
        if missing:
            raise click.UsageError(f"routers {missing} are not in {config_path}; it has {sorted(built)}")
        routers = [built[n] for n in (router_names or built)]
    with _progress(console) as progress:
        if spec:
            columns = {} if config is None else {m: mc.replay.column for m, mc in config.models.items()
                                                 if mc.replay is not None}
            try:
                if weak is None or strong is None:
                    dw, ds = default_pair(outcomes)
                    weak, strong = weak or dw, strong or ds
                result = check_outcomes(outcomes, floor, routers, weak=weak, strong=strong, columns=columns,
                                        n_boot=n_boot, seed=seed, alpha=alpha, progress=progress)
            except (ValueError, KeyError) as e:
                raise click.UsageError(str(e)) from None
        else:
            result = check_traces(traces, store.feedback(), reference=strong or config.strongest(), floor=floor,
                                  routers=routers, weak=weak, n_boot=n_boot, seed=seed, alpha=alpha,
                                  source=f"traces of {config_path}" + (f", key {key}" if key else ""),
                                  progress=progress)
    # The key's own figures, as `gearshift traces --by key` gives them (spend, savings, quality retained).
    figures = None
    if key is not None and not spec:
        from gearshift.gateway.summary import summarise_by

        [figures] = summarise_by(traces, config, "key", strong or config.strongest())
    if as_json:
        click.echo(json.dumps({**result.to_dict(), **({"key": figures} if figures else {})}, indent=2))
    else:
        print_check(result, console)
        if figures:
            kept = figures["quality_retained"]
            console.print(f"key {key}: {figures['requests']} requests, spend ${figures['spend_usd']:.6f}, savings "
                          f"${figures['savings_usd_estimate']:.6f} against always-{figures['reference_model']} "
                          f"(estimate), quality retained {'-' if kept is None else f'{kept:.1%}'} on "
                          f"{figures['pairs']} shadow pairs" + (" (a lower bound)" if figures["lower_bound"] else ""))
