"""`split`: an A/B traffic split between routers, sticky per user or client key."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from gearshift.config import Config, ShadowConfig
from gearshift.request import ChatRequest
from gearshift.route import Route
from gearshift.routers.base import Options, Router
from gearshift.routers.random import uniform


class SplitOptions(Options):
    arms: dict[str, float] = Field(description="router name -> share of traffic (relative weights)")
    sticky: str = Field(default="user", description="user (metadata user / body user, else client key), client, none")
    seed: int = 0


class SplitRouter(Router[SplitOptions]):
    """Sends each user (or client key) to one arm for good, so an A/B comparison is not muddled by users
    who see both arms. Each arm is a configured router; the trace records which arm answered."""

    kind = "split"
    Options = SplitOptions

    def __init__(self, name: str, options: SplitOptions, fallbacks: Sequence[str] = (),
                 shadow: ShadowConfig | None = None) -> None:
        super().__init__(name, options, fallbacks, shadow)
        weights = [(arm, w) for arm, w in options.arms.items() if w > 0]
        total = sum(w for _, w in weights)
        self._names = [arm for arm, _ in weights]
        self._cum: list[float] = []
        acc = 0.0
        for _, w in weights:
            acc += w / total
            self._cum.append(acc)
        self._arms: list[Router[Any]] = []

    @classmethod
    def check(cls, name: str, options: SplitOptions, config: Config) -> list[tuple[str, Any, str]]:
        problems: list[tuple[str, Any, str]] = []
        others = sorted(r for r, rc in config.routers.items() if r != name and rc.kind != "split")
        for arm, w in options.arms.items():
            if arm not in others:
                problems.append((f"arms.{arm}", arm, f"one of the (non-split) routers: {others}"))
            if w < 0:
                problems.append((f"arms.{arm}", w, "a weight >= 0"))
        if not any(w > 0 for w in options.arms.values()):
            problems.append(("arms", dict(options.arms), "at least one arm with weight > 0"))
        if options.sticky not in ("user", "client", "none"):
            problems.append(("sticky", options.sticky, "user, client or none"))
        return problems

    def bind(self, routers: Mapping[str, Router[Any]]) -> None:
        self._arms = [routers[n] for n in self._names]

    def sticky_key(self, request: ChatRequest) -> str:
        """Who the request belongs to; requests of one key always land in one arm."""
        if self.options.sticky == "user":
            user = request.metadata.get("user") or request.body.get("user")
            if user:
                return f"user:{user}"
        if self.options.sticky in ("user", "client") and request.client:
            return f"client:{request.client}"
        return f"text:{request.text()}"

    def route(self, request: ChatRequest) -> Route:
        u = uniform(self.sticky_key(request), self.options.seed)
        i = min(bisect.bisect_right(self._cum, u), len(self._arms) - 1)
        arm = self._arms[i]
        route = arm.route(request)
        route.arm = arm.name
        route.router = self.name
        route.reason = f"split: arm {arm.name}; {route.reason}"
        return route

    def models(self) -> list[str]:
        out: list[str] = []
        for arm in self._arms:
            out += [m for m in arm.models() if m not in out]
        return out
