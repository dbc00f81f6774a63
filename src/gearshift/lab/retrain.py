"""Retrain a classifier router on the gateway's own scored shadow pairs, as traffic shifts.

`retrain` (`gearshift lab retrain`): the pairs are split once: the new model is fitted on one part and judged
on the other, where it is compared with the model being served (same prompts, same metric) and its threshold
is calibrated to the quality floor. The artifact is written beside the served one and stored as a new router
version (threshold + artifact); running gateways switch to it when it is promoted.

`prove_learner` and `refit` (the gateway's proof with `proof.retrain`): the training procedure is proven on
every pair by a K-fold cross-fit, then fitted on all of them (see prove_learner for why the threshold carries).
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gearshift.config import Config
from gearshift.lab import metrics
from gearshift.lab.calibrate import Calibration, QualityFloor, calibrate_scores
from gearshift.lab.proof import Proof, prove_scores
from gearshift.lab.recalibrate import collect_pairs, scoring_router
from gearshift.lab.replay import router_scores, sweep_scores
from gearshift.lab.signal import Signal, signal
from gearshift.lab.train import TrainSettings, cross_fit_scores, fit, fold_of, model_of, pair_scores
from gearshift.learned import artifact as art
from gearshift.learned.features import FeatureSpec
from gearshift.outcomes.table import Outcomes
from gearshift.routers.base import ProofOptions
from gearshift.routers.classifier import ClassifierRouter
from gearshift.store.base import TraceStore


@dataclass
class Retraining:
    router: str
    version: int
    pairs: int
    train_pairs: int
    check_pairs: int
    artifact: Path
    calibration: Calibration
    apgr_new: float
    apgr_served: float
    promoted: bool
    traces: int = 0  # shadowed traces the pairs came from
    signal: Signal | None = None  # the new model's APGR interval on the check pairs
    refused: str | None = None  # why `apply` did not promote it


def classifier_router(config: Config, name: str, store: TraceStore | None = None) -> ClassifierRouter:
    """The configured two-model classifier router `name` (as its promoted version serves it, with `store`)."""
    router = scoring_router(config, name, store)
    if not isinstance(router, ClassifierRouter):
        raise TypeError(f"router {name!r} is of kind {router.kind!r}; only a classifier router can be retrained "
                        "(recalibrate its threshold instead: gearshift lab recalibrate)")
    return router


def _settings(router: ClassifierRouter) -> TrainSettings:
    """Train as the served artifact was trained: same features, learner and regularisation, the router's models."""
    h = router.model.header
    trained = (h.get("training") or {}).get("settings") or {}
    spec = FeatureSpec.from_json(h["features"]["spec"])
    base = TrainSettings(weak=router.weak, strong=router.strong, features=spec)
    # The learner is today's default unless the artifact named one (artifacts before the ridge did not).
    return replace(base, c_strong=float(trained.get("c_strong", base.c_strong)),
                   c_weak=float(trained.get("c_weak", base.c_weak)),
                   learner=trained.get("learner", base.learner), alpha=float(trained.get("alpha", base.alpha)))


def retrain(config: Config, store: TraceStore, name: str, floor: float, since: float | None = None,
            min_pairs: int = 200, check_share: float = 0.3, by: str = "gearshift lab retrain",
            apply: bool = False, alpha: float = 0.05, seed: int = 0, now: float | None = None,
            prior: art.Artifact | None = None) -> Retraining:
    """Fit a new model on recent pairs, calibrate it to `floor`, store it as a version; promote when `apply`.

    `now` (default: the time) is recorded as when its pairs end: later pairs are unseen by the model.
    `prior`: an artifact trained on other outcomes to warm-start the fit from (see lab.train.fit)."""
    router = classifier_router(config, name, store)
    if router.model.featurizer.encoder is not None:
        raise ValueError(f"router {name!r} uses an encoder; retrain it with `gearshift lab train --traces ...`")
    if not 0 < check_share < 1:
        raise ValueError(f"check share {check_share}: must be between 0 and 1")
    pairs, traces = collect_pairs(store, router, since)
    if len(pairs) < min_pairs:
        raise ValueError(f"router {name!r} has {len(pairs)} scored shadow pairs; need {min_pairs} to retrain "
                         "(raise the shadow rate, wait, or lower --min-pairs)")
    perm = np.random.default_rng(seed).permutation(len(pairs))
    cut = int(round(len(pairs) * check_share))
    check, train = pairs.subset(np.sort(perm[:cut])), pairs.subset(np.sort(perm[cut:]))

    settings = _settings(router)
    if prior is not None:  # a prior warm-starts the ridge learner (lab.train.fit)
        settings = replace(settings, learner="ridge")
    a = fit(train, settings, prior=prior)
    new_scores = pair_scores(model_of(a), check)
    served_scores = router_scores(router, check)
    sig = signal(new_scores, check, router.weak, router.strong, seed=seed)
    apgr_new = float(sig.apgr.value)
    apgr_served = float(metrics.apgr(sweep_scores(served_scores, check, router.weak, router.strong)))
    cal = calibrate_scores(new_scores, check, router.weak, router.strong, QualityFloor(floor), alpha=alpha)

    measured: dict[str, Any] = {
        "pairs": len(pairs), "train_pairs": len(train), "check_pairs": len(check), "floor": floor,
        "confidence": cal.confidence, "lower_bound": cal.bound, "retained": cal.retained_calibration,
        "strong_share": cal.calibration.strong_share, "apgr": apgr_new, "apgr_served": apgr_served,
        "served_artifact": router.artifact, "previous_threshold": router.threshold,
        "signal": sig.to_json(),
    }
    out, stored = _save(config, router, a, cal.threshold, now, {"retrained_on_check_pairs": measured})
    version = store.add_router_version(name, {"threshold": cal.threshold, "artifact": stored}, measured, by)
    refused = None
    if apply and not sig.has_signal:
        # A model no better than random on pairs it never saw must not serve by itself.
        refused = f"not promoted: {sig.line()}"
    elif apply:
        store.promote(name, version, by)
    return Retraining(name, version, len(pairs), len(train), len(check), out, cal, apgr_new, apgr_served,
                      apply and refused is None, traces, sig, refused)


def _save(config: Config, router: ClassifierRouter, a: art.Artifact, threshold: float, now: float | None,
          metrics: dict[str, Any]) -> tuple[Path, str]:
    """Write a refitted artifact beside the configured one; its path, and the path as a version stores it."""
    a.header["threshold"] = threshold
    a.header["training"]["until"] = time.time() if now is None else now  # later pairs are unseen by it
    a.header["metrics"] = metrics
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S-%f")
    configured = Path(router.configured_artifact)  # named after the config's artifact, however often retrained
    base = configured if configured.is_absolute() else Path(config.base_dir) / configured
    out = base.with_name(f"{base.stem}.retrained-{stamp}.json")
    art.save(a, out)
    return out, str(out.relative_to(config.base_dir)) if out.is_relative_to(config.base_dir) else str(out)


CROSS_FIT_FOLDS = 5


def prove_learner(router: ClassifierRouter, pairs: Outcomes, opts: ProofOptions, look: int | None = None,
                  share: float = 1.0, folds: int = CROSS_FIT_FOLDS, seed: int = 0) -> Proof:
    """Prove the router's training procedure (lab.retrain's settings) on `pairs` by cross-fitting, with the
    proof's own test (lab.proof.prove_scores: the permutation test against random, the floor's calibrated bound)
    at check `look` of a sequence holding `share` of alpha.

    Every pair counts, where proving each refitted model on the pairs after its training waited for fresh pairs
    at an ever smaller share of alpha.

    The signal is tested on a chained `folds`-fold cross-fit (lab.train.cross_fit_scores: fold k scored by a
    model fitted on folds 0..k-1; fold 0 only trains), stratified by fold (each fold ranked within itself, gains
    permuted within folds). Chained, the test is exact: with no signal, fold k's outcomes are exchangeable given
    every earlier fold (its model saw none of them), so the folds' statistics combine as independent ones. A
    plain cross-fit (each fold's model fitted on all the others) is not: each fold learns the others' noise, and
    on placebo draws its test promoted at twice its level (benchmarks/crossfit_power.py).

    Once the signal is proven, the threshold is calibrated to the floor on the plain cross-fit's out-of-fold
    scores (each fold scored by a model fitted on the other folds, (K-1)/K of the pairs), and serves the model
    `refit` fits on all the pairs: the CV+ / jackknife+ argument (Barber, Candes, Ramdas, Tibshirani 2021,
    "Predictive inference with the jackknife+"): leave-fold-out outcomes stand for the full-data fit's on new
    prompts, up to the learner's stability. CV+ guarantees 1 - 2 alpha, so the floor's bound is taken at alpha / 2
    (lab.proof.prove_scores). The serving re-check (lab.proof.recheck) demotes it on evidence if they do not."""
    if len(pairs) < opts.min_pairs:
        return prove_scores(np.zeros(0), pairs, router.weak, router.strong, opts.floor, opts.min_pairs,
                            opts.confidence)
    settings = _settings(router)
    chained = cross_fit_scores(pairs, settings, folds, seed, chained=True)
    fold = fold_of(len(pairs), folds, seed)
    at = np.flatnonzero(fold > 0)  # fold 0 only trains
    args: dict[str, Any] = {"seed": seed, "look": look, "share": share, "groups": fold[at],
                            "signal_confidence": opts.signal_confidence if look is not None else None}
    proof = prove_scores(chained[at], pairs.subset(at), router.weak, router.strong, opts.floor, len(at),
                         opts.confidence, **args)
    if not proof.ok:
        return proof
    plain = cross_fit_scores(pairs, settings, folds, seed)
    return prove_scores(chained[at], pairs.subset(at), router.weak, router.strong, opts.floor, len(at),
                        opts.confidence, calibrate_on=(plain, pairs), **args)


def refit(config: Config, store: TraceStore, router: ClassifierRouter, pairs: Outcomes, proof: Proof,
          promote: bool, by: str = "gateway proof check (cross-fit)", now: float | None = None) -> int:
    """Fit the router's learner on all `pairs` (after `prove_learner` proved it on them), write the artifact with
    the proof's threshold, and store it as a serving version (promoted when `promote`); the version."""
    if not proof.ok or proof.threshold is None:
        raise ValueError(f"router {router.name!r}: the learner is not proven ({proof.reason})")
    a = fit(pairs, _settings(router))
    metrics = {"proof": {**proof.metrics(), "cross_fit": True}}
    _, stored = _save(config, router, a, proof.threshold, now, metrics)
    version = store.add_router_version(router.name, {"threshold": proof.threshold, "mode": "serve",
                                                     "artifact": stored}, metrics, by)
    if promote:
        store.promote(router.name, version, by)
    return version


__all__ = ["CROSS_FIT_FOLDS", "Retraining", "classifier_router", "prove_learner", "refit", "retrain"]
