"""`fixed`: always one model. The baselines (always-expensive, always-cheap) are fixed routers."""

from __future__ import annotations

from typing import Any

from gearshift.config import Config
from gearshift.request import ChatRequest
from gearshift.route import Route
from gearshift.routers.base import Options, Router


class FixedOptions(Options):
    model: str


class FixedRouter(Router[FixedOptions]):
    kind = "fixed"
    Options = FixedOptions

    @classmethod
    def check(cls, name: str, options: FixedOptions, config: Config) -> list[tuple[str, Any, str]]:
        if options.model not in config.models:
            return [("model", options.model, f"one of the models: {sorted(config.models)}")]
        return []

    def route(self, request: ChatRequest) -> Route:
        return Route(steps=[self.step(self.options.model)], router=self.name, reason=f"fixed: {self.options.model}")

    def models(self) -> list[str]:
        return [self.options.model]
