"""`classifier`: a learned router that predicts, from the request alone, how well each model will do.

Serving is plain numpy (no scikit-learn): features (gearshift.learned.features) -> linear heads -> each
head's link gives its prediction (the strong model's quality gain, or a model's probability of an
acceptable answer). Artifacts come from `gearshift lab train` (gearshift.lab.train) and are loaded by path.

Two forms:
- pair (two models): a ScoringRouter. The default learner's artifact (`stack`) has a logistic head
  per model and a head predicting the strong model's quality gain g over TF-IDF features (ridge,
  identity link); score = a * rank(p_strong - p_weak) + (1 - a) * rank(g), ranks among out-of-fold
  predictions of the training pairs, a chosen by cross-validation (gearshift.lab.train). Other
  rules: `gain` (score = (1 + p_strong - p_weak) / 2), `predicted-gain` ((1 + g) / 2, clipped to
  [0, 1]), `weak-fails` (1 - p_weak). Route strong when score >= threshold (from the config, else
  the artifact's; `gearshift lab calibrate` sets it).
- multi (several models): pick the cheapest model whose predicted quality reaches `target`
  (else the best predicted), or maximise predicted quality - lambda x cost (RouterBench's form).
  Costs are the mean USD per call of each model in the training outcomes (recorded in the artifact).

Config:
    routers:
      smart:
        kind: classifier
        artifact: router.json          # relative to the config file
        threshold: 0.52                # pair form (optional: default from the artifact)
        models: {gpt-4-1106-preview: gpt4}   # artifact model -> config model, when names differ
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field

from gearshift.config import Config, ShadowConfig
from gearshift.learned.artifact import ArtifactError
from gearshift.learned.classifier import GAIN_HEAD, KIND, Model
from gearshift.learned.encoders import EncoderError, make_encoder
from gearshift.request import ChatRequest
from gearshift.route import Route
from gearshift.routers.base import Router, ScoringOptions, ScoringRouter

log = logging.getLogger("gearshift.routers")


class ClassifierOptions(ScoringOptions):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    artifact: str = Field(description="path of the router artifact (relative to the config file)")
    threshold: float | None = Field(default=None, description="pair form: route strong when score >= this")
    models: dict[str, str] = Field(default_factory=dict,
                                   description="artifact model name -> config model name, where they differ")
    target: float | None = Field(default=None, ge=0, le=1,
                                 description="multi form: cheapest model with predicted quality >= target")
    cost_weight: float | None = Field(default=None, ge=0, alias="lambda",
                                      description="multi form: maximise predicted quality - lambda x cost (USD)")
    encoder: dict[str, Any] | None = Field(default=None, description="encoder settings, when the artifact needs one")
    costs: dict[str, float] = Field(default_factory=dict,
                                    description="multi form: config model -> USD per call, replacing the "
                                                "artifact's training-time mean cost (e.g. after a price change)")


def _resolve(artifact_model: str, options: ClassifierOptions, config: Any) -> str | None:
    """The config model serving an artifact model: explicit mapping, same name, or a replay column."""
    if artifact_model in options.models:
        return options.models[artifact_model]
    if artifact_model in config.models:
        return artifact_model
    for name, mc in config.models.items():
        if mc.replay is not None and mc.replay.column == artifact_model:
            return str(name)
    return None


def _artifact_path(options: ClassifierOptions, config: Any) -> Path:
    p = Path(options.artifact).expanduser()
    return p if p.is_absolute() else Path(config.base_dir) / p


class ClassifierRouter(ScoringRouter[ClassifierOptions]):
    """Two-model form: score = predicted need of the strong model; strong when score >= threshold."""

    kind = KIND
    Options = ClassifierOptions

    def __init__(self, name: str, options: ClassifierOptions, fallbacks: Sequence[str] = (),
                 shadow: ShadowConfig | None = None, *,
                 model: Model | None = None, names: dict[str, str] | None = None) -> None:
        super().__init__(name, options, fallbacks, shadow)
        if model is None:
            raise ValueError("ClassifierRouter needs a loaded model; build it with from_config")
        self._names = names or {}
        self.model = model
        # The artifact served now: the config's, or a promoted retrained version's (see `use`).
        self.configured_artifact = self.artifact = str(options.artifact)
        self._bind(model)
        t = options.threshold if options.threshold is not None else model.default_threshold
        self.threshold = float(t) if t is not None else 0.5

    def _bind(self, model: Model) -> None:
        rule = model.score_rule
        self.weak = self._names.get(rule["weak"], rule["weak"])
        self.strong = self._names.get(rule["strong"], rule["strong"])
        if rule["rule"] in ("gain", "stack"):
            self._strong_head, self._weak_head = model.head_of[rule["strong"]], model.head_of[rule["weak"]]
        if rule["rule"] in ("predicted-gain", "stack"):
            self._gain_head = model.head_of[GAIN_HEAD]

    def use(self, model: Model, artifact: str, threshold: float) -> None:
        """Serve a retrained model (a promoted router version) from now on; it must route the same two models."""
        if model.form != "pair":
            raise ArtifactError(f"{artifact}: a {model.form} artifact cannot replace two-model router {self.name!r}")
        rule = model.score_rule
        pair = (self._names.get(rule["weak"], rule["weak"]), self._names.get(rule["strong"], rule["strong"]))
        if pair != (self.weak, self.strong):
            raise ArtifactError(f"{artifact}: routes {pair}, router {self.name!r} routes {(self.weak, self.strong)}")
        # One request sees either the old model or the new one: the event loop runs one route() at a time.
        self.model, self.artifact, self.threshold = model, artifact, float(threshold)
        self._bind(model)

    @classmethod
    def check(cls, name: str, options: ClassifierOptions, config: Config) -> list[tuple[str, Any, str]]:
        path = _artifact_path(options, config)
        try:
            model = _load_model(options, config)
        except (ArtifactError, EncoderError) as e:
            return [("artifact", options.artifact, f"a readable classifier artifact ({path}: {e})")]
        problems: list[tuple[str, Any, str]] = []
        for m in model.models:
            if _resolve(m, options, config) is None:
                problems.append((f"models.{m}", m, f"a config model for artifact model {m!r}: map it under "
                                 f"`models:` to one of {sorted(config.models)}"))
        for target in options.models.values():
            if target not in config.models:
                problems.append(("models", target, f"one of the models: {sorted(config.models)}"))
        names = {_resolve(m, options, config) or m for m in model.models}
        for m, usd in options.costs.items():
            if m not in names:
                problems.append((f"costs.{m}", m, f"one of this router's models: {sorted(names)}"))
            elif not (usd >= 0 and math.isfinite(usd)):
                problems.append((f"costs.{m}", usd, "a cost per call in USD, >= 0"))
        if model.form == "pair":
            if options.costs:
                problems.append(("costs", options.costs, "no costs: a two-model router routes by `threshold`"))
            if options.target is not None or options.cost_weight is not None:
                problems.append(("target", options.target, "no target/lambda: this artifact is a two-model "
                                 "router; set `threshold` (or run `gearshift lab calibrate`)"))
        else:
            if options.threshold is not None:
                problems.append(("threshold", options.threshold, "no threshold: this artifact routes over several "
                                 "models; set `target` or `lambda`"))
            if (options.target is None) == (options.cost_weight is None):
                problems.append(("target", options.target, "exactly one of `target` (quality floor) or `lambda`"))
        return problems

    @classmethod
    def from_config(cls, name: str, options: ClassifierOptions, config: Config, fallbacks: Sequence[str] = (),
                    shadow: ShadowConfig | None = None) -> Router[Any]:
        model = _load_model(options, config)
        names = {m: _resolve(m, options, config) or m for m in model.models}
        if model.form == "multi":
            return MultiClassifierRouter(name, options, fallbacks, shadow, model=model, names=names)
        router = cls(name, options, fallbacks, shadow, model=model, names=names)
        if options.threshold is None:
            # The artifact's threshold was chosen on its training data, never on this traffic.
            log.warning("router %s serves with its artifact's threshold %.6g, never calibrated on this traffic "
                        "(unless a promoted router version replaces it): run `gearshift lab calibrate --config ... "
                        "--router %s --floor 0.95 --outcomes ...` on outcomes of this traffic, or `gearshift lab "
                        "recalibrate --config ... --router %s --floor 0.95` on its shadow pairs", name,
                        router.threshold, name, name)
        return router

    def score(self, request: ChatRequest) -> float:
        p = self.model.predict(request)
        rule = self.model.score_rule
        # Plain float arithmetic on two numbers (numpy's per-call overhead would dominate here);
        # the same formula as Model.pair_score.
        if rule["rule"] == "gain":
            g = (1.0 + float(p[self._strong_head]) - float(p[self._weak_head])) / 2.0
            return 0.0 if g < 0.0 else 1.0 if g > 1.0 else g
        if rule["rule"] == "predicted-gain":
            g = (1.0 + float(p[self._gain_head])) / 2.0
            return 0.0 if g < 0.0 else 1.0 if g > 1.0 else g
        if rule["rule"] == "stack":
            m, a = self.model, self.model.weight
            return (a * m.rank_heads.one(float(p[self._strong_head]) - float(p[self._weak_head]))
                    + (1.0 - a) * m.rank_gain.one(float(p[self._gain_head])))
        return float(self.model.pair_score(p))

    def scores(self, requests: Sequence[ChatRequest]) -> np.ndarray:
        if not requests:
            return np.zeros(0)
        return self.model.pair_score(self.model.predict_many(requests))


class MultiClassifierRouter(Router[ClassifierOptions]):
    """Several-model form: cheapest model meeting the quality target, or max quality - lambda x cost."""

    kind = KIND
    Options = ClassifierOptions
    registered = False  # built by ClassifierRouter.from_config for multi-form artifacts

    def __init__(self, name: str, options: ClassifierOptions, fallbacks: Sequence[str] = (),
                 shadow: ShadowConfig | None = None, *, model: Model, names: dict[str, str] | None = None) -> None:
        super().__init__(name, options, fallbacks, shadow)
        self.model = model
        names = names or {}
        arts = [hm["model"] for hm in model.heads_meta]
        self.art_models = arts
        self.names = [names.get(m, m) for m in arts]
        # The config's costs (today's prices) win over the artifact's (the training data's).
        cost = np.array([options.costs.get(n, model.costs.get(m, math.nan)) for m, n in zip(arts, self.names, strict=True)])
        if np.isnan(cost).any():
            missing = [n for n, c in zip(self.names, cost, strict=True) if math.isnan(c)]
            raise ArtifactError(f"artifact lacks the mean cost of {missing}: give it under the router's `costs`")
        self.cost = cost
        self.by_cost = np.argsort(cost, kind="stable")
        self.target = options.target
        self.cost_weight = options.cost_weight

    def choose(self, p: np.ndarray) -> np.ndarray:
        """Index of the chosen head for each row of predicted qualities (n, K)."""
        p = np.atleast_2d(p)
        if self.cost_weight is not None:
            return np.asarray(np.argmax(p - self.cost_weight * self.cost[None, :], axis=1))
        ok = p[:, self.by_cost] >= self.target
        first = np.argmax(ok, axis=1)
        best = np.argmax(p, axis=1)
        return np.asarray(np.where(ok.any(axis=1), self.by_cost[first], best))

    def route(self, request: ChatRequest) -> Route:
        p = self.model.predict(request)
        k = int(self.choose(p)[0])
        model = self.names[k]
        if self.cost_weight is not None:
            why = f"max quality - {self.cost_weight:g} x cost: {model} (predicted {p[k]:.3f}, ${self.cost[k]:.6f})"
        elif p[k] >= (self.target or 0):
            why = f"cheapest predicted >= {self.target:g}: {model} ({p[k]:.3f})"
        else:
            why = f"none predicted >= {self.target:g}; best: {model} ({p[k]:.3f})"
        return Route(steps=[self.step(model)], router=self.name, reason=f"{KIND}: {why}", score=float(p[k]))

    def routes(self, requests: Sequence[ChatRequest]) -> list[str]:
        """Chosen config model of many requests in one vectorised pass (the lab's fast path)."""
        if not requests:
            return []
        return [self.names[k] for k in self.choose(self.model.predict_many(requests))]

    def models(self) -> list[str]:
        return [self.names[k] for k in self.by_cost]


# Loaded models by (file, mtime, size, encoder settings): config validation and router building
# both load the artifact; a model is read-only once loaded, so routers may share it.
_LOADED: dict[tuple[str, int, int, str], Model] = {}
_LOADED_MAX = 8


def _load_model(options: ClassifierOptions, config: Any) -> Model:
    path = _artifact_path(options, config)
    try:
        st = path.stat()
        key: tuple[str, int, int, str] | None = (str(path.resolve()), st.st_mtime_ns, st.st_size,
                                                 json.dumps(options.encoder, sort_keys=True))
    except OSError:
        key = None  # missing file: Model.load raises the clear error
    if key is not None and key in _LOADED:
        return _LOADED[key]
    model = Model.load(path, make_encoder(options.encoder))
    if key is not None:
        while len(_LOADED) >= _LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = model
    return model


__all__ = ["ClassifierOptions", "ClassifierRouter", "MultiClassifierRouter"]
