"""Retrain a classifier router on the gateway's own scored shadow pairs, as traffic shifts.

The pairs are split once: the new model is fitted on one part and judged on the other, where it is
compared with the model being served (same prompts, same metric) and its threshold is calibrated to
the quality floor. The artifact is written beside the served one and stored as a new router version
(threshold + artifact); running gateways switch to it when it is promoted.
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
from gearshift.lab.recalibrate import collect_pairs, scoring_router
from gearshift.lab.replay import router_scores, sweep_scores
from gearshift.lab.signal import Signal, signal
from gearshift.lab.train import TrainSettings, fit, model_of, pair_scores
from gearshift.learned import artifact as art
from gearshift.learned.features import FeatureSpec
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
    a.header["threshold"] = cal.threshold
    a.header["training"]["until"] = time.time() if now is None else now
    a.header["metrics"] = {"retrained_on_check_pairs": measured}
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S-%f")
    configured = Path(router.configured_artifact)  # named after the config's artifact, however often retrained
    base = configured if configured.is_absolute() else Path(config.base_dir) / configured
    out = base.with_name(f"{base.stem}.retrained-{stamp}.json")
    art.save(a, out)
    stored = str(out.relative_to(config.base_dir)) if out.is_relative_to(config.base_dir) else str(out)
    version = store.add_router_version(name, {"threshold": cal.threshold, "artifact": stored}, measured, by)
    refused = None
    if apply and not sig.has_signal:
        # A model no better than random on pairs it never saw must not serve by itself.
        refused = f"not promoted: {sig.line()}"
    elif apply:
        store.promote(name, version, by)
    return Retraining(name, version, len(pairs), len(train), len(check), out, cal, apgr_new, apgr_served,
                      apply and refused is None, traces, sig, refused)


__all__ = ["Retraining", "classifier_router", "retrain"]
