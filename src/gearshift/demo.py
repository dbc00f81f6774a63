"""`gearshift demo`: the gateway on real recorded outcomes, driven by the official OpenAI client."""

from __future__ import annotations

import logging
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from gearshift.errors import ConfigError
from gearshift.outcomes.fetch import FetchError

EXAMPLE = "replay-gsm8k.yaml"


def default_config_path() -> Path:
    """The demo config shipped in examples/ (beside the source tree)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "examples" / EXAMPLE
        if candidate.is_file():
            return candidate
    raise click.ClickException(f"cannot find examples/{EXAMPLE}; pass --config")


@dataclass
class RouterResult:
    router: str
    requests: int = 0
    correct: float = 0.0
    cost: float = 0.0
    strong_calls: int = 0
    errors: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.requests if self.requests else 0.0


def train_routers(outcomes: Any, folder: Path, floor: float, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Learned routers for the demo, trained on `outcomes` (the training half) and written to `folder`.

    Two thirds fit the models, one third calibrates both thresholds to keep `floor` of always-strong
    quality (the same bootstrap lower-bound rule for both), so the held-out half the demo sends
    through the gateway was never seen. Needs the `lab` extra (scikit-learn)."""
    import numpy as np

    from gearshift.gates.learned import LearnedGate, LearnedOptions
    from gearshift.lab.calibrate import QualityFloor, calibrate_scores
    from gearshift.lab.gating import cascade_outcomes, gate_scores, train_learned_gate
    from gearshift.lab.train import TrainSettings, default_features, model_of, pair_scores, train
    from gearshift.learned import artifact
    from gearshift.outcomes.datasets import ROUTELLM_STRONG, ROUTELLM_WEAK

    weak, strong = ROUTELLM_WEAK, ROUTELLM_STRONG
    order = np.random.default_rng(seed).permutation(len(outcomes))
    cut = 2 * len(order) // 3
    fit, cal = outcomes.subset(np.sort(order[:cut])), outcomes.subset(np.sort(order[cut:]))
    target = QualityFloor(floor)

    settings = TrainSettings(features=default_features(fit), weak=weak, strong=strong)
    router_path = artifact.save(train(fit, settings), folder / "classifier.json")
    scores = pair_scores(model_of(artifact.load(router_path)), cal)
    router_threshold = calibrate_scores(scores, cal, weak, strong, target).threshold

    gate_model = train_learned_gate(fit, weak, strong)
    gate_path = gate_model.save(folder / "gate.json")
    gate = LearnedGate(LearnedOptions(kind="learned", artifact=str(gate_path)), model=gate_model)
    escalation = gate_scores([gate], cal, weak).escalation_scores()
    t = calibrate_scores(escalation, cascade_outcomes(cal, weak, strong), weak, strong, target).threshold
    # A request escalates when 1 - gate score >= t: the gate passes at scores just above 1 - t.
    gate_threshold = float(np.nextafter(1.0 - t, np.inf)) if np.isfinite(t) else 0.0
    return {
        "gearshift/classifier": {"kind": "classifier", "artifact": str(router_path), "threshold": router_threshold},
        "gearshift/cascade-learned": {"kind": "cascade", "tiers": [
            {"model": "mixtral-8x7b", "gates": [{"kind": "learned", "artifact": str(gate_path),
                                                  "threshold": gate_threshold}]},
            {"model": "gpt-4-1106"}]},
    }


LIFECYCLE_PER_HOUR = 50.0  # requests per simulated hour; the proof is checked every hour
LIFECYCLE_MIN_PAIRS = 200


def show_lifecycle(raw: dict[str, Any], base_dir: Path, prompts: Any, router: dict[str, Any], floor: float) -> Any:
    """The classifier's life on the held-out prompts: it starts in observe (the strong model serves, its
    decisions are recorded, every request shadowed), is proven on the scored pairs, and is promoted to
    serve its own decisions. The gateway's own code runs in-process on a simulated clock (gearshift.sim)."""
    from gearshift.sim import simulate

    name = "gearshift/classifier"
    observed = {**router, "mode": "observe",
                "shadow": {"rate": 1.0, "compare": "recorded", "explore": "mixtral-8x7b"},
                "proof": {"min_pairs": LIFECYCLE_MIN_PAIRS, "floor": floor, "auto_promote": True, "every_hours": 1}}
    cfg = {**raw, "routers": {name: observed}}
    click.echo(f"\n{name}'s life: it starts in observe on the {len(prompts)} held-out prompts (gpt-4-1106 serves, "
               f"its decisions are recorded, each request shadowed to mixtral-8x7b, pairs scored from the recorded "
               f"answers); the gateway checks its proof at {LIFECYCLE_MIN_PAIRS} pairs, then each time they have grown by "
               f"half (each check at a higher confidence, so that all together promote a router without signal at most "
               f"1% of the time: the default signal_confidence)")
    run = simulate(cfg, prompts, base_dir=base_dir, router=name, seeds=[0], per_hour=LIFECYCLE_PER_HOUR).runs[0]
    first = run.promotions[0] if run.promotions else None
    end = first.request if first else len(run.serving)
    click.echo(f"  observe   requests 1-{end}: served by gpt-4-1106 (savings {run.savings() if not first else 0:.0%}); "
               f"{run.pairs[end - 1]} scored pairs")
    if first is None:
        click.echo(f"  not proven on this traffic: {run.events[-1].reason if run.events else 'too few pairs'}")
        return run
    proof, _, promoted = first.reason.partition("; ")
    click.echo(f"  proven    at request {first.request} (hour {first.hours:g}), {first.pairs} pairs: {proof}")
    changes = [e for e in run.events if e.kind != "retrained"]
    for i, e in enumerate(changes):
        until = changes[i + 1].request if i + 1 < len(changes) else len(run.serving)
        if e.kind == "promoted":
            what = promoted if e is first else e.reason
            click.echo(f"  promoted  {what}: the router serves its own decisions for requests {e.request + 1}-"
                       f"{until}: accuracy {run.quality_share(e.request, until):.1%} of always-strong's, cost "
                       f"{1 - run.savings(e.request, until):.0%} of it, "
                       f"{run.strong_served[e.request:until].mean():.0%} to gpt-4-1106")
        else:
            click.echo(f"  {e.kind:<9} at request {e.request} (hour {e.hours:g}): {e.reason}")
    click.echo(f"  whole stream: accuracy {run.quality_share():.1%} of always-strong's, cost "
               f"{1 - run.savings():.0%} of it, plus shadow ${run.shadow[-1]:.4f} (always-strong "
               f"${run.strong.sum():.4f})")
    return run


def _ask(client: Any, router: str, prompt: str) -> tuple[str, float, float | None]:
    """One request through the gateway: (model that answered, cost, recorded quality)."""
    raw = client.chat.completions.with_raw_response.create(model=router, messages=[{"role": "user", "content": prompt}])
    completion = raw.parse()
    extra = (completion.model_extra or {}).get("gearshift_replay") or {}
    return raw.headers["x-gearshift-model"], float(raw.headers["x-gearshift-cost-usd"]), extra.get("quality")


def run_demo(config_path: Path, limit: int | None, concurrency: int, routers: list[str] | None,
             learned: bool = True, floor: float = 0.9) -> list[RouterResult]:
    """Train the learned routers on one half of the prompts, serve the config in-process with them,
    send the other half to every router, and score the answers."""
    import yaml
    from openai import OpenAI
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from gearshift import plan
    from gearshift.gateway.server import running
    from gearshift.lab.calibrate import split_halves
    from gearshift.outcomes.datasets import load

    # The demo's gateway is its own, in this process on 127.0.0.1, and only the demo's client calls it:
    # it is opened explicitly (client keys of the file, if any, are not needed).
    raw = yaml.safe_load(Path(config_path).read_text())
    raw.pop("client_keys", None)
    raw["server"] = {**(raw.get("server") or {}), "open": True}
    config = plan.parse(raw, source=str(config_path), base_dir=Path(config_path).resolve().parent).config
    with tempfile.TemporaryDirectory() as tmp:
        # A fresh store per run, so the demo's traces summary describes this run only.
        config = config.model_copy(update={"store": config.store.model_copy(update={"url": f"sqlite:///{tmp}/demo.db"})})
        datasets = {m.replay.dataset for m in config.models.values() if m.replay}
        if len(datasets) != 1:
            raise click.ClickException("the demo config's replay models must share one dataset")
        outcomes = load(datasets.pop(), base_dir=config.base_dir)
        train_half, test_half = split_halves(outcomes)
        if learned:
            click.echo(f"training a classifier router and a learned gate on {len(train_half)} prompts "
                       f"(thresholds calibrated to keep {floor:.0%} of always-strong quality) ...")
            extra = train_routers(train_half, Path(tmp), floor)
            show_lifecycle(raw, Path(config_path).resolve().parent, test_half, extra["gearshift/classifier"], floor)
            raw["routers"] = {**raw["routers"], **extra}
            raw["store"] = {"url": f"sqlite:///{tmp}/demo.db"}
            config = plan.parse(raw, source=str(config_path), base_dir=config.base_dir).config
        prompts = list(test_half.prompts[:limit] if limit else test_half.prompts)
        click.echo(f"sending {len(prompts)} held-out prompts to each router through the gateway")
        names = routers or list(config.routers)
        strongest = config.strongest()
        results = []
        with running(config) as gw:
            client = OpenAI(base_url=gw.url + "/v1", api_key="demo", max_retries=0)
            with Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), transient=False) as progress, \
                    ThreadPoolExecutor(concurrency) as pool:
                for name in names:
                    task = progress.add_task(name, total=len(prompts))
                    res = RouterResult(name)
                    for fut in [pool.submit(_ask, client, name, p) for p in prompts]:
                        try:
                            model, cost, quality = fut.result()
                        except Exception as e:  # counted and shown; the demo goes on
                            res.errors += 1
                            logging.getLogger("gearshift.demo").debug("request failed: %s", e)
                        else:
                            res.requests += 1
                            res.cost += cost
                            res.correct += quality or 0.0
                            res.strong_calls += model == strongest
                        progress.advance(task)
                    results.append(res)
            gw.gateway.writer.close()
            stored = gw.gateway.store.count()
        click.echo(f"{stored} traces stored")
    return results


def print_results(results: list[RouterResult], strong_router: str, weak_router: str) -> None:
    from rich.console import Console
    from rich.table import Table

    by = {r.router: r for r in results}
    strong, weak = by.get(strong_router), by.get(weak_router)
    table = Table(title="GSM8K through the gateway: recorded GPT-4-1106 and Mixtral-8x7B answers",
                  caption="saved and retained are against always-strong (gearshift/strong)")
    for col in ("router", "requests", "accuracy", "spend $", "saved", "retained", "to strong", "errors"):
        table.add_column(col, justify="right" if col != "router" else "left", no_wrap=True)
    for r in results:
        savings = f"{(1 - r.cost / strong.cost) * 100:.1f}%" if strong and strong.cost else "-"
        retained = f"{r.accuracy / strong.accuracy * 100:.1f}%" if strong and strong.accuracy else "-"
        table.add_row(r.router, str(r.requests), f"{r.accuracy * 100:.1f}%", f"{r.cost:.4f}", savings, retained,
                      f"{r.strong_calls / r.requests * 100:.0f}%" if r.requests else "-", str(r.errors))
    Console(width=max(100, Console().width)).print(table)
    if strong and weak:
        click.echo(f"always-strong {strong.accuracy * 100:.1f}% for ${strong.cost:.4f}; "
                   f"always-weak {weak.accuracy * 100:.1f}% for ${weak.cost:.4f}. "
                   "Costs are estimates from tokens (characters/4) and the configured prices.")


def ensure_data(name: str) -> None:
    """Use GEARSHIFT_DATA (or the cache) when it holds the dataset, else download it once."""
    from gearshift.outcomes import datasets

    if (datasets.data_dir() / name).is_dir():
        return
    click.echo(f"{name} is not in {datasets.data_dir()}: downloading it once from its public source")
    datasets.fetch(name)


@click.command("demo")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"demo config (default: examples/{EXAMPLE})")
@click.option("--limit", type=int, default=None, help="only the first N prompts")
@click.option("--concurrency", type=int, default=8, show_default=True)
@click.option("--router", "routers", multiple=True, help="routers to compare (default: all in the config)")
@click.option("--learned/--no-learned", default=True, show_default=True,
              help="train a classifier router and a learned-gate cascade on the other half first (needs gearshift[lab])")
@click.option("--floor", default=0.9, show_default=True, type=click.FloatRange(0.5, 1.0),
              help="quality to keep (share of always-strong) when calibrating the learned routers")
def demo_command(config_path: Path | None, limit: int | None, concurrency: int, routers: tuple[str, ...],
                 learned: bool, floor: float) -> None:
    """Route GSM8K prompts through the gateway with replay models; print spend, savings and accuracy."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    path = config_path or default_config_path()
    try:
        ensure_data("routellm")
        if learned:
            try:
                import sklearn  # noqa: F401
            except ImportError:
                click.echo("scikit-learn is not installed (pip install 'gearshift[lab]'): "
                           "showing the routers that need no training", err=True)
                learned = False
        results = run_demo(path, limit, concurrency, list(routers) or None, learned, floor)
    except ConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(2)
    except FetchError as e:  # no copy of the data here and no way to download it: say so, no traceback
        click.echo(f"error: {e}\nfix: set GEARSHIFT_DATA to a folder holding the recorded datasets "
                   "(e.g. ../shared/datasets), or run where their public source can be reached", err=True)
        sys.exit(2)
    print_results(results, "gearshift/strong", "gearshift/weak")


commands = [demo_command]
