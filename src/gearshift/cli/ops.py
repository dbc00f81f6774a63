"""`gearshift lab ab`, `gearshift lab recalibrate` and `gearshift lab retrain`: the lab on live traces."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from gearshift.cli.lab import lab_group

T = TypeVar("T")


def _config_and_store(config_path: str):  # type: ignore[no-untyped-def]
    from gearshift.cli import config_or_exit
    from gearshift.store import open_store

    config = config_or_exit(config_path)
    return config, open_store(config.store, config.base_dir)


@lab_group.command("ab")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--router", default=None, help="only traces of this (split) router")
@click.option("--control", default=None, help="the control arm (default: the first by name)")
@click.option("--since-hours", type=float, default=None)
@click.option("--json", "as_json", is_flag=True)
def lab_ab(config_path: str, router: str | None, control: str | None, since_hours: float | None, as_json: bool) -> None:
    """Compare A/B arms on quality (gates, shadow agreement, feedback), cost and latency."""
    from dataclasses import asdict

    from gearshift.lab.ab import ab_report, print_ab

    config, store = _config_and_store(config_path)
    since = time.time() - since_hours * 3600 if since_hours else None
    try:
        report = ab_report(store.ab_rows(since=since, router=router), store.feedback(since), control=control,
                           router=router)
    except ValueError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2, default=str))
    else:
        print_ab(report)


def _on_pairs(config_path: str, name: str, floor: float | None, since_hours: float | None,
              run: Callable[[Any, Any, float, float | None], T]) -> T:
    """Run a recalibration or retraining on the router's recent pairs; its errors end the command cleanly."""
    config, store = _config_and_store(config_path)
    rc = config.routers.get(name)
    floor = floor or (rc.recalibrate.floor if rc and rc.recalibrate else None)
    if floor is None:
        raise click.UsageError("give --floor (the router has no recalibrate.floor)")
    since = time.time() - since_hours * 3600 if since_hours else None
    try:
        return run(config, store, floor, since)
    except (ValueError, KeyError, TypeError) as e:
        click.echo(f"error: {e.args[0] if e.args else e}", err=True)
        sys.exit(2)


@lab_group.command("recalibrate")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--router", "name", required=True)
@click.option("--floor", type=float, default=None, help="quality retained to keep (default: the router's recalibrate.floor)")
@click.option("--since-hours", type=float, default=None, help="only pairs from this many recent hours")
@click.option("--min-pairs", type=int, default=100, show_default=True)
@click.option("--apply", is_flag=True, help="promote the new version at once")
@click.option("--by", default="gearshift lab recalibrate", show_default=True)
def lab_recalibrate(config_path: str, name: str, floor: float | None, since_hours: float | None, min_pairs: int,
                    apply: bool, by: str) -> None:
    """Refit a router's threshold on recent scored shadow pairs; store it as a new version."""
    from gearshift.lab.recalibrate import recalibrate

    r = _on_pairs(config_path, name, floor, since_hours,
                  lambda config, store, floor, since: recalibrate(config, store, name, floor, since, min_pairs, by,
                                                                  apply))
    click.echo(pairs_line(r.pairs, r.traces))
    click.echo(f"{name}: version {r.version} from {r.pairs} pairs: threshold {r.previous_threshold:.6g} -> "
               f"{r.calibration.threshold:.6g}; {r.calibration.summary()}")
    if r.signal is not None:
        click.echo(f"{name}: {r.signal.figures()}")
    if r.estimate is not None:
        click.echo(f"{name}: pair grades: {r.estimate.line()}"
                   + ("; the threshold keeps the floor on a lower bound of quality (conservative)" if r.lower_bound else ""))
    _outcome(r, config_path, name)


@lab_group.command("retrain")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--router", "name", required=True, help="a two-model classifier router")
@click.option("--floor", type=float, default=None, help="quality retained to keep (default: the router's recalibrate.floor)")
@click.option("--since-hours", type=float, default=None, help="only pairs from this many recent hours")
@click.option("--min-pairs", type=int, default=200, show_default=True)
@click.option("--check-share", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.3,
              show_default=True, help="share of the pairs kept out of training, to compare and calibrate on")
@click.option("--apply", is_flag=True, help="promote the new version at once")
@click.option("--by", default="gearshift lab retrain", show_default=True)
@click.option("--prior", "prior_path", default=None, type=click.Path(dir_okay=False),
              help="warm-start from this artifact (trained on other outcomes, ridge learner); its weight is "
                   "chosen on the pairs")
def lab_retrain(config_path: str, name: str, floor: float | None, since_hours: float | None, min_pairs: int,
                check_share: float, apply: bool, by: str, prior_path: str | None) -> None:
    """Retrain a classifier router on recent scored shadow pairs; store it as a new version."""
    from gearshift.lab.retrain import retrain

    prior = load_prior(prior_path)
    r = _on_pairs(config_path, name, floor, since_hours,
                  lambda config, store, floor, since: retrain(config, store, name, floor, since, min_pairs,
                                                              check_share, by, apply, prior=prior))
    click.echo(pairs_line(r.pairs, r.traces))
    click.echo(f"{name}: version {r.version}: retrained on {r.train_pairs} of {r.pairs} pairs, wrote {r.artifact}")
    apgr = f"{r.signal.apgr}" if r.signal is not None else f"{r.apgr_new:.3f}"
    click.echo(f"on the {r.check_pairs} held-out pairs: APGR {apgr} (random 0.5; served model: {r.apgr_served:.3f}); "
               f"{r.calibration.summary()}")
    _outcome(r, config_path, name)


def load_prior(path: str | None) -> Any:
    """The --prior artifact of `lab train` / `lab retrain` (None without one); a bad file ends the command."""
    if path is None:
        return None
    from gearshift.lab.train import Prior
    from gearshift.learned.artifact import ArtifactError, load

    try:
        a = load(path, kind="classifier")
        Prior(a)
    except (ArtifactError, ValueError) as e:
        raise click.UsageError(f"--prior {path}: {e}") from None
    return a


def _outcome(r: Any, config_path: str, name: str) -> None:
    """The no-signal line when it applies, then whether the version was promoted (or why not)."""
    if r.signal is not None and not r.signal.has_signal and r.refused is None:
        click.echo(r.signal.line())
    if r.refused is not None:
        click.echo(r.refused)
    click.echo("promoted" if r.promoted else f"not applied: run `gearshift routers promote --config {config_path} "
               f"{name} {r.version} --by NAME`")


def pairs_line(pairs: int, traces: int) -> str:
    """Why there may be fewer pairs than shadowed traces, said where it is true."""
    if traces > pairs:
        return (f"{pairs} pairs from {traces} shadowed traces: a prompt asked more than once is one pair "
                "(its grades averaged), and traces without both models graded are left out")
    return f"{pairs} pairs from {traces} shadowed traces"

