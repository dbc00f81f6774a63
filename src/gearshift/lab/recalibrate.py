"""Recurring recalibration: refit a scoring router's threshold on recent scored shadow pairs so it
keeps its quality floor, and store the result as a new router version (applied only when promoted)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gearshift.config import Config
from gearshift.lab.calibrate import Calibration, QualityFloor, calibrate_scores
from gearshift.lab.replay import router_scores
from gearshift.lab.signal import Signal, signal
from gearshift.outcomes.datasets import from_traces
from gearshift.outcomes.table import Outcomes
from gearshift.plan import build_routers
from gearshift.routers.base import ScoringRouter
from gearshift.routers.classifier import ClassifierRouter
from gearshift.store.base import TraceStore
from gearshift.store.view import PairEstimate


@dataclass
class Recalibration:
    router: str
    version: int
    pairs: int
    calibration: Calibration
    previous_threshold: float
    promoted: bool
    traces: int = 0  # shadowed traces the pairs came from
    signal: Signal | None = None  # the router's APGR interval on pairs its model did not train on
    refused: str | None = None  # why `apply` did not promote it
    estimate: PairEstimate | None = None  # how the pairs' grades were estimated (a lower bound or not)

    @property
    def lower_bound(self) -> bool:
        """The weak model's grades count every disagreement as a loss: the floor is kept conservatively."""
        return self.estimate is not None and self.estimate.lower_bound


def scoring_router(config: Config, name: str, store: TraceStore | None = None) -> ScoringRouter:
    """The configured router `name`, which must have a threshold to recalibrate; with `store`, as its
    promoted version makes it serve (threshold, and a retrained classifier's artifact)."""
    from gearshift.routers.versions import apply_versions, promoted_versions

    routers = build_routers(config)
    if name not in routers:
        raise KeyError(f"no router {name!r}; routers: {sorted(routers)}")
    router = routers[name]
    if not isinstance(router, ScoringRouter):
        raise TypeError(f"router {name!r} is of kind {router.kind!r}, which has no threshold to recalibrate "
                        "(kinds with one: classifier, random with two models)")
    if store is not None:
        apply_versions({name: router}, promoted_versions({name: router}, store, config.base_dir))
    return router


def shadow_pairs(store: TraceStore, router: ScoringRouter, since: float | None = None) -> Outcomes:
    """Prompts of the router's traffic with scored answers from both its weak and strong model."""
    return collect_pairs(store, router, since)[0]


def collect_pairs(store: TraceStore, router: ScoringRouter, since: float | None = None,
                  first: int | None = None) -> tuple[Outcomes, int]:
    """The router's scored pairs, and how many shadowed traces they came from: a prompt asked again
    is one pair (its answers' grades averaged), so there may be fewer pairs than shadowed traces.
    `first`: only the first that many pairs, in order of their prompt's first trace (a proof's look)."""
    rows = [t for t in store.traces(since=since) if t["router"] == router.name or t.get("arm") == router.name]
    outcomes = from_traces(rows).select_models([router.weak, router.strong])
    keep = np.flatnonzero(~np.isnan(outcomes.quality).any(axis=1))[:first]  # from_traces keeps arrival order
    # In prompt order, not arrival order: the same pairs give the same splits (train, check, held-out)
    # however concurrent requests happened to be stored.
    keep = keep[np.argsort(outcomes.prompts[keep].astype(str), kind="stable")]
    return outcomes.subset(keep), sum(1 for t in rows if t.get("shadowed"))


def recalibrate(config: Config, store: TraceStore, name: str, floor: float, since: float | None = None,
                min_pairs: int = 100, by: str = "gearshift lab recalibrate", apply: bool = False,
                alpha: float = 0.05) -> Recalibration:
    """Fit the threshold that keeps `floor` of the reference's quality on recent pairs; store it as a
    new version; promote it when `apply`."""
    router = scoring_router(config, name, store)
    previous = float(router.threshold)
    # A model trained on this gateway's pairs scores the prompts it was fitted on as it learned them: a threshold
    # calibrated there would be fitted to memorised prompts. Only the pairs after its training count.
    trained = trained_until(router)
    unseen = trained is not None and (since is None or since < trained)
    if unseen:
        since = trained
    pairs, traces = collect_pairs(store, router, since)
    if len(pairs) < min_pairs:
        when = "the start" if since is None else time.ctime(since)
        raise ValueError(f"router {name!r} has {len(pairs)} scored shadow pairs ({traces} shadowed traces) since "
                         f"{when}{' (when its model was trained on the pairs before)' if unseen else ''}; need "
                         f"{min_pairs} (raise the shadow rate, wait, or lower --min-pairs)")
    scores = router_scores(router, pairs)
    cal = calibrate_scores(scores, pairs, router.weak, router.strong, QualityFloor(floor), alpha=alpha)
    sig = signal(scores, pairs, router.weak, router.strong)  # every pair is one its model did not train on
    metrics: dict[str, Any] = {
        "pairs": len(pairs), "floor": floor, "confidence": cal.confidence, "lower_bound": cal.bound,
        "retained": cal.retained_calibration, "strong_share": cal.calibration.strong_share,
        "previous_threshold": previous, "signal": sig.to_json(),
        "pair_estimate": None if pairs.pair_estimate is None else pairs.pair_estimate.to_json(),
    }
    settings: dict[str, Any] = {"threshold": cal.threshold}
    if isinstance(router, ClassifierRouter) and router.artifact != router.configured_artifact:
        settings["artifact"] = router.artifact  # the threshold belongs to the retrained model it was fitted on
    version = store.add_router_version(name, settings, metrics, by)
    refused = None
    if apply and not sig.has_signal and not cal.threshold <= previous:
        # Without signal only a move toward the strong model (a lower threshold, more strong calls) is
        # safe to apply unseen; one that sends more traffic to the weak model waits for a person.
        refused = f"not promoted: {sig.line()}"
    elif apply:
        store.promote(name, version, by)
    return Recalibration(name, version, len(pairs), cal, previous, apply and refused is None, traces, sig, refused,
                         pairs.pair_estimate)


def trained_until(router: ScoringRouter) -> float | None:
    """When the router's model was trained on this gateway's traces (`lab train --traces`, `lab retrain`),
    the time it was made: only pairs after it are unseen by the model. None otherwise."""
    import datetime as _dt

    if not isinstance(router, ClassifierRouter):
        return None
    training = router.model.header.get("training") or {}
    if not str(training.get("outcomes", "")).startswith("traces"):
        return None
    if isinstance(training.get("until"), (int, float)):  # `lab retrain` records when its pairs end
        return float(training["until"])
    try:
        return _dt.datetime.fromisoformat(str(training["created"])).timestamp() + 1  # stamped to the second
    except (KeyError, ValueError):
        return None

