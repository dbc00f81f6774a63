"""The router interface: a pure, fast policy from request to route, run alike by the gateway and the lab."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from gearshift.request import ChatRequest
from gearshift.route import Route, Step
from gearshift.services import Services

if TYPE_CHECKING:
    import numpy as np

    from gearshift.config import Config, ShadowConfig
    from gearshift.gates.base import Gate


class Options(BaseModel):
    """Base of each router kind's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ProofOptions(Options):
    """What a router in `observe` must show before it serves its own decisions (see lab/proof.py)."""

    min_pairs: int = Field(default=500, ge=10, description="scored shadow pairs needed before a proof is tried")
    floor: float = Field(default=0.95, gt=0, le=1, description="quality retained to keep, of the safe model's")
    confidence: float = Field(default=0.95, gt=0, lt=1, description="confidence of the floor's lower bound")
    signal_confidence: float = Field(default=0.99, gt=0, lt=1, description="confidence that the router beats "
                                     "random (a permutation test) before it may serve: stricter than the floor's, "
                                     "since serving a router without signal is the worst failure; over every "
                                     "check of every model it had, a router without signal is promoted at most "
                                     "at 1 - this")
    auto_promote: bool = Field(default=False, description="serve a proven version at once (else wait for "
                                                          "`gearshift routers promote`)")
    every_hours: float = Field(default=1.0, gt=0, description="how often the gateway looks whether a check is due")
    look_growth: float = Field(default=1.5, gt=1, description="an observing router's model is checked on its "
                               "first `min_pairs` unseen pairs, then on its first min_pairs * growth^(k-1) at "
                               "check k (each check needs more confidence, so that all of them together promote "
                               "a router without signal at most at 1 - signal_confidence)")
    retrain: bool = Field(default=False, description="classifier: when the configured model's proof fails, "
                          "prove its training procedure instead by a chained 5-fold cross-fit on every pair so far "
                          "(fold k scored by a model fitted on the folds before it; the same test on those "
                          "out-of-fold scores, stratified by fold); when proven, fit it on those pairs and store it "
                          "with the threshold the out-of-fold scores calibrated (serving when auto_promote); "
                          "while it serves, each later look proven refits it on every pair so far. "
                          "Alpha is split half and half: the configured model's checks hold half of "
                          "1 - signal_confidence, the learner's cross-fit checks the other half")


class ScoringOptions(Options):
    """Options every two-model scoring router takes: observe or serve, the safe model, the proof.

    `observe` is the recommended start: the router's decision is recorded, the safe model served,
    until a proof on this traffic's shadow pairs lets it serve. `serve` (default) routes at once."""

    mode: Literal["observe", "serve"] = "serve"
    safe: str | None = Field(default=None, description="model served while observing (default: the strong one)")
    proof: ProofOptions = Field(default_factory=ProofOptions)


OptionsT = TypeVar("OptionsT", bound=Options)


class Router(ABC, Generic[OptionsT]):
    """A policy that turns a request into a route. `route()` does no I/O.

    A kind subclasses `Router[ItsOptions]`, sets `kind` and `Options`, and lives in one module of
    this package (gearshift.routers.ROUTERS finds it)."""

    kind: ClassVar[str]
    Options: ClassVar[type[Options]] = Options

    def __init__(self, name: str, options: OptionsT, fallbacks: Sequence[str] = (), shadow: ShadowConfig | None = None) -> None:
        self.name = name
        self.options: OptionsT = options
        self.fallbacks = tuple(fallbacks)
        self.shadow = shadow

    @classmethod
    def check(cls, name: str, options: OptionsT, config: Config) -> list[tuple[str, Any, str]]:
        """Problems with options that need the whole config: (key, bad value, what is allowed)."""
        return []

    @classmethod
    def from_config(cls, name: str, options: OptionsT, config: Config, fallbacks: Sequence[str] = (),
                    shadow: ShadowConfig | None = None) -> Router[Any]:
        return cls(name, options, fallbacks, shadow)

    def bind(self, routers: Mapping[str, Router[Any]]) -> None:
        """Called once every router is built: routers that delegate (split) look their targets up here."""

    def attach(self, services: Services) -> None:
        """Called by the gateway once its executor exists, with what it lends (model calls, latencies)."""

    @abstractmethod
    def route(self, request: ChatRequest) -> Route:
        """Decide the route of one request."""

    def models(self) -> list[str]:
        """Models this router may choose (for /v1/models and the lab)."""
        return []

    def step(self, model: str, gates: tuple[Gate[Any], ...] = ()) -> Step:
        """A step to `model` with this router's fallbacks (minus the model itself)."""
        return Step(model=model, gates=gates, fallbacks=tuple(f for f in self.fallbacks if f != model))


class ScoringRouter(Router[OptionsT]):
    """A two-model router with a score: higher means the strong model is needed.

    Route strong when score >= threshold. The lab sweeps the threshold in one vectorised pass over
    `scores()`, so offline curves describe exactly what `route()` does online.
    """

    strong: str
    weak: str
    threshold: float
    # Whether the router serves its own decisions; a promoted version may change it (observe -> serve
    # when proven, serve -> observe when demoted). State: observing, no_signal, proven, serving.
    mode: str = "serve"
    state: str = "serving"
    state_reason: str = ""
    pairs: int = 0

    def __init__(self, name: str, options: OptionsT, fallbacks: Sequence[str] = (), shadow: ShadowConfig | None = None) -> None:
        super().__init__(name, options, fallbacks, shadow)
        self.mode = str(getattr(options, "mode", "serve"))
        if self.mode == "observe":
            self.state, self.state_reason = "observing", "observing: no pairs yet"

    @property
    def proof(self) -> ProofOptions:
        return getattr(self.options, "proof", None) or ProofOptions()

    @property
    def observed(self) -> bool:
        """Whether the config starts this router in observe (its life is then governed by proofs)."""
        return getattr(self.options, "mode", "serve") == "observe"

    @property
    def safe(self) -> str:
        return getattr(self.options, "safe", None) or self.strong

    @abstractmethod
    def score(self, request: ChatRequest) -> float:
        """The request's score in [0, 1]."""

    def scores(self, requests: Sequence[ChatRequest]) -> np.ndarray:
        """Scores of many requests; subclasses vectorise."""
        import numpy as np  # the gateway's static routers never need numpy: import on first use

        return np.fromiter((self.score(r) for r in requests), dtype=float, count=len(requests))

    def route(self, request: ChatRequest) -> Route:
        s = self.score(request)
        strong = s >= self.threshold
        model = self.strong if strong else self.weak
        cmp = ">=" if strong else "<"
        if self.mode == "observe":
            side = "strong" if strong else "weak"
            return Route(steps=[self.step(self.safe)], router=self.name, score=s, threshold=self.threshold,
                         reason=f"observe: would route {side} (score {s:.2f} {cmp} {self.threshold:.2f}); "
                                f"serving safe model {self.safe}")
        return Route(steps=[self.step(model)], router=self.name,
                     reason=f"{self.kind}: score {s:.3f} {cmp} threshold {self.threshold:.3f}", score=s,
                     threshold=self.threshold)

    def models(self) -> list[str]:
        return [self.weak, self.strong]
