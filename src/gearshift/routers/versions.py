"""Router versions: what a promoted version asks of a router (a threshold, a retrained artifact), read
from the store and applied. The gateway polls it; the lab's recalibration applies it at once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gearshift.learned.artifact import ArtifactError
from gearshift.routers.base import Router, ScoringRouter

if TYPE_CHECKING:
    from gearshift.store.base import TraceStore

log = logging.getLogger("gearshift.versions")


@dataclass
class Promoted:
    """What a router's promoted version asks of it: a threshold, and for a retrained classifier, its model."""

    threshold: float
    artifact: str | None = None
    model: Any = None  # the loaded classifier Model, when the artifact differs from the one served
    refusal_key: tuple[Any, ...] | None = None  # which refusal to remember if the router refuses the model
    mode: str | None = None  # "serve" for a proven version, "observe" for a demotion; None: as configured


def _file_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def promoted_versions(routers: dict[str, Router[Any]], store: TraceStore, base_dir: str = ".",
                      refused: set[tuple[Any, ...]] | None = None) -> dict[str, Promoted]:
    """Each scoring router's promoted version (reads the store and loads new artifacts: call off the loop).

    `refused` remembers (router, version, artifact file state) whose artifact could not be used: such a
    version is logged once and not loaded again until its file changes or another version is promoted."""
    from gearshift.learned.classifier import Model
    from gearshift.routers.classifier import ClassifierRouter

    refused = set() if refused is None else refused
    out = {}
    for name, r in routers.items():
        if not isinstance(r, ScoringRouter):
            continue
        v = store.active_version(name)
        if v is None or "threshold" not in v["settings"]:
            continue
        p = Promoted(float(v["settings"]["threshold"]), v["settings"].get("artifact"), mode=v["settings"].get("mode"))
        if isinstance(r, ClassifierRouter):
            # A version without an artifact was calibrated for the config's artifact.
            p.artifact = p.artifact or r.configured_artifact
        if p.artifact and isinstance(r, ClassifierRouter) and p.artifact != r.artifact:
            path = Path(p.artifact) if Path(p.artifact).is_absolute() else Path(base_dir) / p.artifact
            p.refusal_key = (name, v["version"], str(path), _file_key(path))
            if p.refusal_key in refused:
                continue
            try:
                p.model = Model.load(path, r.model.featurizer.encoder)
            except (ArtifactError, OSError) as e:
                refused.add(p.refusal_key)
                log.error("router %s: promoted version %s has an unusable artifact, kept the served one "
                          "(retried when the file changes or another version is promoted): %s", name, v["version"], e)
                continue
        out[name] = p
    return out


def apply_versions(routers: dict[str, Router[Any]], promoted: dict[str, Promoted],
                   refused: set[tuple[Any, ...]] | None = None) -> None:
    from gearshift.routers.classifier import ClassifierRouter

    for name, p in promoted.items():
        r = routers[name]
        if isinstance(r, ScoringRouter):
            set_mode(r, p.mode)
        if p.model is not None and isinstance(r, ClassifierRouter):
            try:
                r.use(p.model, str(p.artifact), p.threshold)
            except ArtifactError as e:
                if refused is not None and p.refusal_key is not None:
                    refused.add(p.refusal_key)
                log.error("router %s: promoted artifact refused, kept the served one: %s", name, e)
                continue
            log.info("router %s: now serving %s at threshold %.6g (promoted version)", name, p.artifact, p.threshold)
        elif isinstance(r, ScoringRouter) and r.threshold != p.threshold:
            log.info("router %s: threshold %.6g -> %.6g (promoted version)", name, r.threshold, p.threshold)
            r.threshold = p.threshold


def set_mode(router: ScoringRouter[Any], mode: str | None) -> None:
    """Serve or observe as a promoted version says (None: as configured)."""
    mode = mode or str(getattr(router.options, "mode", "serve"))
    if router.mode == mode:
        return
    log.warning("router %s: now %s (promoted version)", router.name,
                "serving its own decisions" if mode == "serve" else f"observing, serving safe model {router.safe}")
    router.mode = mode
    router.state = "serving" if mode == "serve" else "observing"
