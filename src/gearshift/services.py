"""What the gateway's executor lends to routers and gates once it exists: one declared hook.

Routers and gates take these services in `attach(services)`; in the lab nothing is attached, so
latency budgets skip nothing and judges cannot run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gearshift.trace import Call


class Services(Protocol):
    """Model calls with the executor's retries, pricing and tracing, and recent observed latencies."""

    async def call_model(self, model: str, body: dict[str, Any]) -> tuple[str, Call]:
        """One whole answer of `model` to a chat-completions body: (text, the call for the trace)."""
        ...

    def expected_latency(self, key: str, quantile: float = 0.5) -> float | None:
        """The quantile of recent latencies in ms of a model (or `gate:<name>`), None when none seen."""
        ...
