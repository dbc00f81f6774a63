"""`gearshift lab train` and `gearshift lab calibrate`: fit a classifier router, then set its threshold."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

import click

from gearshift.cli.lab import lab_group
from gearshift.cli.outcomes import (
    drop_contaminated_option,
    load_outcomes,
    price_table,
    prices_option,
)


def _load_outcomes(specs: tuple[str, ...], drop_contaminated: bool, split: str | None, sample: int | None, seed: int,  # type: ignore[no-untyped-def]
                   traces: str | None = None, since_hours: float | None = None, prices: tuple[str, ...] = (),
                   named: tuple[str | None, ...] = ()):
    import time

    import numpy as np

    from gearshift.outcomes import datasets

    if bool(specs) == (traces is not None):
        raise click.UsageError("give exactly one of --outcomes or --traces")
    if traces is not None:
        # The gateway's own traffic: prompts answered by several models (shadow pairs) with verdicts.
        from gearshift import plan
        from gearshift.errors import ConfigError
        from gearshift.store import open_store

        try:
            config = plan.load(traces, serving=False).config
        except ConfigError as e:
            raise click.UsageError(str(e)) from None
        store = open_store(config.store, config.base_dir)
        since = time.time() - since_hours * 3600 if since_hours else None
        try:
            o = datasets.from_traces(store.traces(since=since), name=f"traces of {traces}")
        except ValueError as e:
            raise click.UsageError(f"{traces}: {e}") from None
        finally:
            store.close()
    else:
        o = load_outcomes(specs, drop_contaminated=drop_contaminated, prices=price_table(prices), named=named)
    if split:
        try:
            o = o.split(split)
        except KeyError as e:
            raise click.UsageError(str(e.args[0])) from None
    if sample and sample < len(o):
        o = o.subset(np.sort(np.random.default_rng(seed).choice(len(o), sample, replace=False)))
    return o


@lab_group.command("train")
@click.option("--outcomes", "specs", multiple=True,
              help="dataset name (routellm/mmlu, routerbench/mbpp, ...) or outcomes file; repeat to train on several")
@prices_option
@click.option("--traces", "traces", default=None, type=click.Path(exists=True, dir_okay=False),
              help="train on the gateway's own traces instead: the config whose store holds them (shadow pairs)")
@click.option("--since-hours", type=float, default=None, help="with --traces: only traces of this many recent hours")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="artifact to write (JSON)")
@drop_contaminated_option
@click.option("--split", default=None, help="train only on prompts of this split (e.g. train for routerbench)")
@click.option("--sample", type=click.IntRange(2), default=None, help="train on a random sample of this many prompts")
@click.option("--form", type=click.Choice(["pair", "multi"]), default="pair", show_default=True,
              help="pair: two models, a score and a threshold; multi: several models, target or lambda")
@click.option("--target", type=click.Choice(["gain", "weak-fails"]), default="gain", show_default=True,
              help="pair form: score the predicted quality gain of the strong model, or the weak model's failure")
@click.option("--weak", default=None, help="pair form: the weak model (default: the worse one)")
@click.option("--strong", default=None, help="pair form: the strong model (default: the best one)")
@click.option("--model", "models", multiple=True, help="multi form: models to route over (default: all; repeatable)")
@click.option("--metadata", "metadata_keys", multiple=True,
              help="metadata key used as a feature (repeatable; default: task, when the data has several)")
@click.option("--no-metadata", is_flag=True, help="use no metadata features (text and structure only)")
@click.option("--holdout", type=click.FloatRange(0, 0.9), default=0.2, show_default=True,
              help="share held out to record metrics in the artifact (weights are then refit on all)")
@click.option("--c-strong", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True)
@click.option("--c-weak", type=click.FloatRange(0, min_open=True), default=0.3, show_default=True)
@click.option("--encoder", "encoder_kind", type=click.Choice(["none", "sentence-transformers", "openai"]),
              default="none", show_default=True, help="optional dense text encoder added to the features")
@click.option("--encoder-model", default=None, help="encoder model name or path")
@click.option("--encoder-url", default=None, help="openai encoder: base URL of an OpenAI-compatible /v1 API")
@click.option("--encoder-key-env", default=None, help="openai encoder: variable holding the API key")
@click.option("--learning-curve", "curve", is_flag=True,
              help="also fit on 25/50/75/100% of the training prompts and record the hold-out metrics of each: "
                   "does more data still help?")
@click.option("--learner", type=click.Choice(["stack", "ridge", "logistic"]), default=None,
              help="pair form, target gain: stack (default) weighs a logistic head per model against a TF-IDF ridge "
                   "on the gain by cross-validation; logistic or ridge alone (ridge: the default with --prior, "
                   "which warm-starts it)")
@click.option("--alpha", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="ridge and stack learners: L2 penalty of the gain head")
@click.option("--prior", "prior_path", default=None, type=click.Path(dir_okay=False),
              help="warm-start from this artifact (ridge learner, trained on other outcomes); its feature "
                   "settings are used and its weight is chosen on these outcomes")
@click.option("--seed", default=0, show_default=True, type=int)
def lab_train(specs: tuple[str, ...], prices: tuple[str, ...], traces: str | None, since_hours: float | None, out: str, drop_contaminated: bool, split: str | None, sample: int | None, form: str,
              target: str, weak: str | None, strong: str | None, models: tuple[str, ...],
              metadata_keys: tuple[str, ...], no_metadata: bool, holdout: float, c_strong: float, c_weak: float,
              encoder_kind: str, encoder_model: str | None, encoder_url: str | None, encoder_key_env: str | None,
              curve: bool, learner: str | None, alpha: float, prior_path: str | None, seed: int) -> None:
    """Fit a classifier router from outcomes and write its artifact."""

    from gearshift.cli.ops import load_prior
    from gearshift.lab.signal import RANDOM_APGR, Signal
    from gearshift.lab.train import TrainSettings, default_features, train
    from gearshift.learned import artifact
    from gearshift.learned.encoders import EncoderError, make_encoder
    from gearshift.learned.features import FeatureSpec

    o = _load_outcomes(specs, drop_contaminated, split, sample, seed, traces, since_hours, prices, (weak, strong))
    spec = o.name
    if no_metadata:
        features = FeatureSpec()
    elif metadata_keys:
        missing = [k for k in metadata_keys if k not in o.meta]
        if missing:
            raise click.UsageError(f"metadata {missing} not in {spec}; it has {sorted(o.meta)}")
        features = FeatureSpec(metadata_keys=metadata_keys, cross_key=metadata_keys[0])
    else:
        features = default_features(o)
    for m in (weak, strong, *models):
        if m is not None and m not in o.models:
            raise click.UsageError(f"model {m!r} is not in {spec}; it has {o.models}")
    settings = TrainSettings(form=form, target=target, weak=weak, strong=strong,  # type: ignore[arg-type]
                             models=tuple(models) or None, features=features, c_strong=c_strong, c_weak=c_weak,
                             holdout=holdout, seed=seed,
                             learner=learner or ("ridge" if prior_path else "stack"), alpha=alpha)  # type: ignore[arg-type]
    enc_settings: dict[str, Any] = {"kind": encoder_kind}
    if encoder_kind == "sentence-transformers":
        enc_settings["model"] = encoder_model
    elif encoder_kind == "openai":
        enc_settings.update(base_url=encoder_url, model=encoder_model, api_key_env=encoder_key_env)
    try:
        encoder = make_encoder(enc_settings)
    except EncoderError as e:
        raise click.UsageError(str(e)) from None
    if form == "pair" and len(o.models) > 2 and not (weak and strong):
        raise click.UsageError(f"{spec} has {len(o.models)} models: give --weak and --strong, or --form multi")
    if curve and holdout == 0:
        raise click.UsageError("--learning-curve measures on the hold-out: give --holdout > 0")
    try:
        a = train(o, settings, encoder=encoder, progress=lambda m: click.echo(m, err=True), curve=curve,
                  prior=load_prior(prior_path))
    except (ValueError, KeyError) as e:
        raise click.UsageError(str(e.args[0] if e.args else e)) from None
    path = artifact.save(a, out)
    m = a.header["metrics"]
    if a.header["training"].get("prior"):
        pr = a.header["training"]["prior"]
        click.echo(f"warm start from {prior_path} (trained on {pr['outcomes']}): prior weight {pr['weight']:.3f} "
                   "(0: it does not predict these outcomes' gain, dropped)")
    click.echo(f"wrote {path}: {a.header['form']} router over {a.header['models']}, trained on {len(o)} prompts "
               f"of {o.name}; fingerprint {a.header['training']['fingerprint'][:19]}")
    if "apgr" in m:
        click.echo(f"hold-out ({m['holdout_prompts']} prompts): APGR {m['apgr']['value']:.3f} "
                   f"[{m['apgr']['low']:.3f}, {m['apgr']['high']:.3f}] (random {RANDOM_APGR}), "
                   f"CPT(50%) {m['cpt50']['value']:.1%}, CPT(80%) {m['cpt80']['value']:.1%}")
        if "signal" in m and not m["signal"]["has_signal"]:
            click.echo(Signal.from_json(m["signal"]).line())
    elif "aiq" in m:
        click.echo(f"hold-out ({m['holdout_prompts']} prompts): AIQ {m['aiq']:.4f} vs single models' hull "
                   f"{m['zero_router_aiq']:.4f}")
    for p in m.get("learning_curve", []):
        figures = (f"APGR {p['apgr']:.3f}, CPT(50%) {p['cpt50']:.1%}, CPT(80%) {p['cpt80']:.1%}" if "apgr" in p
                   else f"AIQ {p['aiq']:.4f}")
        click.echo(f"learning curve: trained on {p['train_prompts']} prompts ({p['share']:.0%}): {figures}")
    if m.get("learning_curve") and "apgr" in m:
        half = (m["apgr"]["high"] - m["apgr"]["low"]) / 2
        click.echo(f"  (the hold-out's 95% interval on APGR is about +/-{half:.3f}: smaller differences are noise)")


def set_router_key(config_path: Path, router: str, key: str, value: float) -> str:
    """Set routers.<router>.<key> in a YAML config, keeping its comments and layout when possible.

    A targeted line edit first (replace the key's line, or add it under the router's `kind:`); the
    result is re-parsed and must equal the intended document, else the file is re-dumped whole
    (comments lost; the return value says which).
    """
    import yaml

    text = config_path.read_text()
    data = yaml.safe_load(text)
    want = yaml.safe_load(text)
    want["routers"][router][key] = value
    rendered = repr(float(value)) if math.isfinite(value) else (".inf" if value > 0 else "-.inf")
    lines = text.splitlines(keepends=True)
    edited = _line_edit(lines, router, key, rendered)
    if edited is not None and yaml.safe_load(edited) == want:
        config_path.write_text(edited)
        return "edited in place"
    del data
    config_path.write_text(yaml.safe_dump(want, sort_keys=False))
    return "rewritten (comments were not kept)"


def _line_edit(lines: list[str], router: str, key: str, rendered: str) -> str | None:
    try:
        r0 = next(i for i, ln in enumerate(lines) if re.match(r"^routers:\s*(#.*)?$", ln))
    except StopIteration:
        return None
    pat = re.compile(rf"^(\s+)(['\"]?){re.escape(router)}\2:\s*(#.*)?$")
    start = next((i for i in range(r0 + 1, len(lines)) if pat.match(lines[i])), None)
    if start is None:
        return None
    indent = len(pat.match(lines[start]).group(1))  # type: ignore[union-attr]
    body_indent = None
    end = len(lines)
    for i in range(start + 1, len(lines)):
        ln = lines[i]
        if not ln.strip() or ln.lstrip().startswith("#"):
            continue
        ind = len(ln) - len(ln.lstrip())
        if ind <= indent:
            end = i
            break
        if body_indent is None:
            body_indent = ind
    if body_indent is None:
        return None
    keypat = re.compile(rf"^\s{{{body_indent}}}{re.escape(key)}:\s*[^\s#]*\s*(#.*)?$")
    for i in range(start + 1, end):
        if keypat.match(lines[i]):
            comment = keypat.match(lines[i]).group(1)  # type: ignore[union-attr]
            lines[i] = f"{' ' * body_indent}{key}: {rendered}" + (f"  {comment}" if comment else "") + "\n"
            return "".join(lines)
    kindpat = re.compile(rf"^\s{{{body_indent}}}kind:")
    at = next((i for i in range(start + 1, end) if kindpat.match(lines[i])), None)
    if at is None:
        return None
    lines.insert(at + 1, f"{' ' * body_indent}{key}: {rendered}\n")
    return "".join(lines)


@lab_group.command("calibrate")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--router", "name", required=True, help="a two-model router of the config (e.g. a classifier)")
@click.option("--outcomes", "spec", required=True, help="calibration outcomes (dataset name or file)")
@drop_contaminated_option
@click.option("--split", default=None, help="use only prompts of this split")
@click.option("--share", type=click.FloatRange(0, 1), default=None, help="target: at most this share of strong calls")
@click.option("--budget", type=click.FloatRange(0, min_open=True), default=None, help="target: at most this USD per request")
@click.option("--floor", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="target: keep at least this share of the strong model's quality, with confidence 1 - alpha")
@click.option("--alpha", type=click.FloatRange(0, 0.5, min_open=True), default=0.05, show_default=True)
@click.option("--method", type=click.Choice(["bootstrap", "exact"]), default="bootstrap", show_default=True,
              help="lower bound of the quality floor")
@click.option("--test-share", type=click.FloatRange(0, 0.9), default=0.5, show_default=True,
              help="share of prompts kept aside to check the chosen threshold (0: calibrate on all)")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--dry-run", is_flag=True, help="print the threshold, do not write the config")
def lab_calibrate(config_path: str, name: str, spec: str, drop_contaminated: bool, split: str | None,
                  share: float | None, budget: float | None, floor: float | None, alpha: float, method: str,
                  test_share: float, seed: int, dry_run: bool) -> None:
    """Choose a router's threshold for a target and write it into the config (routers.NAME.threshold)."""
    from gearshift import plan
    from gearshift.errors import ConfigError
    from gearshift.lab.calibrate import CostBudget, QualityFloor, StrongShare, calibrate_scores, split_halves
    from gearshift.lab.replay import router_scores
    from gearshift.lab.signal import signal
    from gearshift.routers.base import ScoringRouter

    targets = [t for t in (share, budget, floor) if t is not None]
    if len(targets) != 1:
        raise click.UsageError("give exactly one target: --share, --budget or --floor")
    target = (StrongShare(share) if share is not None else CostBudget(budget) if budget is not None  # type: ignore[arg-type]
              else QualityFloor(floor))  # type: ignore[arg-type]
    try:
        built = plan.load(config_path, serving=False)
    except ConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(2)
    config, routers = built.config, built.routers
    if name not in routers:
        raise click.UsageError(f"router {name!r} is not in {config_path}; it has {sorted(routers)}")
    router = routers[name]
    if not isinstance(router, ScoringRouter):
        raise click.UsageError(f"router {name!r} (kind {router.kind}) has no threshold; calibrate a two-model "
                               "router (a classifier trained with --form pair)")
    o = _load_outcomes((spec,), drop_contaminated, split, None, seed)
    columns = {m: mc.replay.column for m, mc in config.models.items() if mc.replay is not None}
    weak, strong = columns.get(router.weak, router.weak), columns.get(router.strong, router.strong)
    for m in (weak, strong):
        if m not in o.models:
            raise click.UsageError(f"model {m!r} of router {name!r} is not in {spec}; it has {o.models}")
    cal, test = split_halves(o, seed, 1 - test_share) if test_share > 0 else (o, None)
    scores = router_scores(router, cal)
    test_scores = router_scores(router, test) if test is not None else None
    try:
        result = calibrate_scores(scores, cal, weak, strong, target, test_scores=test_scores, test=test,
                                  alpha=alpha, method=method, seed=seed)  # type: ignore[arg-type]
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"{name}: {result.summary()}")
    # The threshold is fitted on `cal`; APGR does not depend on it, but is measured on the test split when kept.
    held = (test_scores, test) if test is not None and test_scores is not None else (scores, cal)
    sig = signal(held[0], held[1], weak, strong, seed=seed)
    click.echo(f"{name}: {sig.figures()}")
    if not sig.has_signal:
        click.echo(sig.line())
    if dry_run:
        return
    how = set_router_key(Path(config_path), name, "threshold", float(result.threshold))
    click.echo(f"wrote routers.{name}.threshold = {result.threshold:.6g} to {config_path} ({how})")
