"""Per-model circuit breakers and rate-limit cooldowns, so one sick upstream stops costing every
request its retries: an open model is skipped and its fallbacks serve at once."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gearshift.config import Config
from gearshift.errors import UpstreamError

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass(slots=True)
class Circuit:
    """The state of one model that has failed lately (healthy models have none)."""

    failures: int = 0  # consecutive failed calls
    state: str = CLOSED
    open_until: float = 0.0  # monotonic seconds
    rate_limited_until: float = 0.0  # monotonic seconds: the upstream's Retry-After
    trial_since: float = 0.0  # a half-open trial call is in flight since (0: none)


class Breakers:
    """Circuits of every model. `sick` holds only models with a failure, a cooldown or an open circuit,
    so the healthy path costs one dict lookup."""

    def __init__(self, config: Config) -> None:
        self.settings = {name: m.breaker for name, m in config.models.items()}
        self.sick: dict[str, Circuit] = {}
        self.trips: dict[str, int] = dict.fromkeys(config.models, 0)

    def wait(self, model: str, now: float) -> tuple[float, int]:
        """(seconds until `model` may be called, status to report if it may not): (0, 0) when it may be
        called now. Past the open time this claims the one half-open trial call."""
        c = self.sick.get(model)
        if c is None:
            return 0.0, 0
        if c.rate_limited_until > now:
            return c.rate_limited_until - now, 429
        if c.state == OPEN:
            if now < c.open_until:
                return c.open_until - now, 503
            c.state = HALF_OPEN
        if c.state == HALF_OPEN:
            busy_for = self.settings[model].open_seconds
            if c.trial_since and now - c.trial_since < busy_for:  # a lost trial (cancelled) expires
                return max(1.0, c.trial_since + busy_for - now), 503
            c.trial_since = now
        return 0.0, 0

    def success(self, model: str) -> None:
        """The model answered: its circuit closes and its count restarts."""
        self.sick.pop(model, None)

    def failure(self, model: str, error: UpstreamError, now: float) -> None:
        """Count a failed call; open the circuit at the threshold, or again when a trial failed."""
        if not (error.retryable or error.status >= 500):
            self.success(model)  # the upstream answered (a 4xx about the request): it is up
            return
        c = self.sick.get(model)
        if c is None:
            c = self.sick[model] = Circuit()
        c.failures += 1
        c.trial_since = 0.0
        if error.retry_after is not None:
            c.rate_limited_until = now + error.retry_after
        limit = self.settings[model].failures
        if limit and (c.state == HALF_OPEN or c.failures >= limit):
            if c.state != OPEN:
                self.trips[model] += 1
            c.state = OPEN
            c.open_until = now + self.settings[model].open_seconds

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every model's circuit for /health: state, consecutive failures, open until (unix seconds)."""
        now, wall = time.monotonic(), time.time()
        out: dict[str, dict[str, Any]] = {}
        for model in self.settings:
            c = self.sick.get(model) or Circuit()
            state = c.state
            if state == OPEN and now >= c.open_until:
                state = HALF_OPEN  # the next call is the trial
            out[model] = {
                "state": state, "consecutive_failures": c.failures,
                "open_until": round(wall + c.open_until - now, 3) if state == OPEN else None,
                "rate_limited_until": round(wall + c.rate_limited_until - now, 3)
                if c.rate_limited_until > now else None,
                "trips": self.trips[model]}
        return out
