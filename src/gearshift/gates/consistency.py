"""`self_consistency`: ask the cheap model again, k - 1 more times, and accept its answer when the samples
agree with it. Score = the share of the k answers (the gated one and the samples) whose final answer
equals the gated answer's (gates.arithmetic.final_number, else the normalised text).

The samples are model calls made through the gateway's services (retries, prices, trace), so each is
a `gate` call in the trace and counted in the cost; the lab cannot replay them (offline = False).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from gearshift.errors import ConfigError, GearshiftError
from gearshift.gates.arithmetic import final_number, number_value
from gearshift.gates.base import Gate, GateOptions
from gearshift.request import ChatRequest
from gearshift.trace import Verdict

if TYPE_CHECKING:
    from gearshift.config import ModelConfig
    from gearshift.gates.judge import JudgeCall
    from gearshift.services import Services

# Client fields a sample must not carry: it is a whole answer for the gate, not for the client.
_NOT_SAMPLED = ("stream", "stream_options", "n", "logprobs", "top_logprobs", "seed")


def answer_key(answer: str, compare: str = "auto") -> str:
    """What two answers must share to agree: their final number's value, or their normalised text."""
    if compare in ("auto", "number"):
        number = final_number(answer)
        value = number_value(number) if number is not None else None
        if value is not None:
            return f"#{value:g}"
        if compare == "number":
            return ""  # no final number: agrees with nothing
    return re.sub(r"\s+", " ", answer).strip().strip(".!").lower()


class ConsistencyOptions(GateOptions):
    model: str = Field(description="the model sampled: the tier's own model (a name under `models:`)")
    k: int = Field(default=3, ge=2, le=10, description="answers compared, the gated one included (k - 1 calls)")
    compare: Literal["auto", "number", "text"] = Field(
        default="auto", description="final numbers (auto: when stated), or whole normalised texts")
    temperature: float = Field(default=0.7, ge=0, le=2, description="the samples' temperature (some spread)")


class ConsistencyGate(Gate[ConsistencyOptions]):
    """Passes when enough of k answers agree with the gated one (default 0.6: a majority). A failed sample
    counts as disagreeing; when every sample fails, the gate fails with error="samples_failed"."""

    kind = "self_consistency"
    Options = ConsistencyOptions
    default_threshold = 0.6
    offline = False

    def __init__(self, options: ConsistencyOptions, call: JudgeCall | None = None) -> None:
        super().__init__(options)
        self.call = call

    @classmethod
    def from_options(cls, options: Any, models: dict[str, ModelConfig], where: str) -> ConsistencyGate:
        if models and options.model not in models:
            raise ConfigError(f"{where}.model: bad value {options.model!r}; allowed: one of the models {sorted(models)}")
        return cls(options)

    def attach(self, services: Services) -> None:
        """The samples go through the gateway's executor (retries, pricing, tracing)."""
        self.call = services.call_model

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The client's request as one sample's body."""
        body = {k: v for k, v in request.body.items() if k not in _NOT_SAMPLED}
        body["model"] = self.options.model
        body["temperature"] = self.options.temperature
        return body

    async def acheck(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        if self.call is None:
            raise RuntimeError(f"gate {self.name!r} has no model caller; the gateway attaches one")
        o = self.options
        t0 = time.perf_counter()
        body = self.body(request)
        results = await asyncio.gather(*(self.call(o.model, dict(body)) for _ in range(o.k - 1)),
                                       return_exceptions=True)
        calls, texts, failed = [], [], 0
        for r in results:
            if isinstance(r, GearshiftError | TimeoutError):
                failed += 1
                continue
            if isinstance(r, BaseException):
                raise r
            text, call = r
            call.role = "gate"
            calls.append(call)
            texts.append(text)
        cost = sum(c.cost_usd for c in calls)
        latency = (time.perf_counter() - t0) * 1000
        if not texts:
            return Verdict(gate=self.name, passed=False, score=0.0, reasons=[f"all {failed} sample call(s) failed"],
                           latency_ms=latency, error="samples_failed")
        key = answer_key(answer, o.compare)
        # The gated answer agrees with itself, unless it has nothing to compare (no final number).
        agree = (1 if key else 0) + sum(1 for t in texts if key and answer_key(t, o.compare) == key)
        score = agree / o.k
        reasons = [f"{agree} of {o.k} answers agree on {key[:40]!r}"
                   + (f" ({failed} sample call(s) failed)" if failed else "")]
        return self.verdict(score, reasons, cost_usd=cost, latency_ms=latency, calls=calls)
