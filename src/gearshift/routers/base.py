"""The router interface: a pure, fast policy from request to route, run alike by the gateway and the lab."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

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
        return Route(steps=[self.step(model)], router=self.name,
                     reason=f"{self.kind}: score {s:.3f} {cmp} threshold {self.threshold:.3f}", score=s)

    def models(self) -> list[str]:
        return [self.weak, self.strong]
