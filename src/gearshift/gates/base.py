"""The gate interface: an evaluator of one answer that a cascade uses to accept or escalate.

Programmatic gates are sync, pure and fast (`check`): the lab runs them over thousands of recorded
answers. Gates that call a model (the judge) override `acheck` and are marked `offline = False`.
"""

from __future__ import annotations

from abc import ABC
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gearshift.config import error_lines
from gearshift.errors import ConfigError
from gearshift.registry import Registry
from gearshift.trace import Verdict

if TYPE_CHECKING:
    from gearshift.config import ModelConfig
    from gearshift.request import ChatRequest
    from gearshift.services import Services


class GateOptions(BaseModel):
    """Options every gate kind accepts; each kind adds its own. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    name: str | None = Field(default=None, description="label in traces and headers (default: the kind)")
    threshold: float | None = Field(default=None, ge=0, le=1,
                                    description="pass when score >= threshold (default per kind)")


OptionsT = TypeVar("OptionsT", bound=GateOptions)


class Gate(ABC, Generic[OptionsT]):
    """An evaluator of a response. Subclasses set `kind`, `Options`, `default_threshold`, and `check`;
    `class LengthGate(Gate[LengthOptions])` types `self.options`."""

    kind: ClassVar[str]
    Options: ClassVar[type[GateOptions]] = GateOptions
    default_threshold: ClassVar[float] = 1.0
    offline: ClassVar[bool] = True  # False when judging needs an upstream call (the lab cannot replay it)
    needs_logprobs: ClassVar[bool] = False  # True: the gateway asks the upstream for token logprobs
    replays_recorded: ClassVar[bool] = False  # True: offline, `check` replays a recorded verdict (the judge)

    def __init__(self, options: OptionsT) -> None:
        self.options: OptionsT = options
        self.name: str = options.name or self.kind
        self.threshold: float = self.default_threshold if options.threshold is None else options.threshold

    @classmethod
    def from_options(cls, options: Any, models: dict[str, ModelConfig], where: str) -> Gate[Any]:
        """Build from validated options; kinds that need the model table (judge) override this."""
        return cls(options)

    def check(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        """Judge `answer` (the text) to `request`; `completion` is the raw chat.completion body if any."""
        raise NotImplementedError(f"gate kind {self.kind!r} has no synchronous check; await acheck()")

    async def acheck(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        """The gateway's entry point; programmatic gates simply run `check`."""
        return self.check(request, answer, completion)

    def attach(self, services: Services) -> None:
        """Called by the gateway once its executor exists; gates that call a model (the judge) keep it."""

    def verdict(self, score: float, reasons: list[str] | None = None, **extra: Any) -> Verdict:
        """A verdict from a score, applying this gate's threshold."""
        score = min(1.0, max(0.0, float(score)))
        return Verdict(gate=self.name, passed=score >= self.threshold, score=score, reasons=reasons or [], **extra)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} threshold={self.threshold}>"


# Marks a router option that holds gate specs, so the config's JSON Schema describes each gate kind there.
GATE_LIST = "x-gearshift-gates"

GATES: Registry[Gate[Any]] = Registry("gearshift.gates", Gate, "gate kind")
register = GATES.register  # kinds defined outside gearshift.gates (tests, plugins)


def _format_errors(err: ValidationError, where: str, kind: str, cls: type[Gate[Any]]) -> str:
    allowed = sorted(f.alias or name for name, f in cls.Options.model_fields.items())
    unknown = f"unknown key for gate kind {kind}; allowed keys: {', '.join(allowed)}"
    return "\n".join([f"{where}: invalid gate (kind {kind})", *error_lines(err, where, unknown)])


def build_gate(spec: dict[str, Any] | str, models: dict[str, ModelConfig] | None = None,
               where: str = "gate") -> Gate[Any]:
    """A gate from its YAML form, e.g. `{kind: length, min: 20}` (a bare string is `{kind: <it>}`).

    `models` is the config's model table (a judge names one); `where` is the key path used in errors,
    e.g. `routers.cascade.gates.0`. Raises ConfigError naming the key and what is allowed.
    """
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: a gate is a mapping with `kind:` (one of {sorted(GATES)}), got {spec!r}")
    kind = spec.get("kind")
    if kind is None:
        raise ConfigError(f"{where}.kind: required key is missing; allowed: {sorted(GATES)}")
    cls = GATES.resolve(kind, f"{where}.kind")
    try:
        options = cls.Options.model_validate(spec)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, where, kind, cls)) from None
    return cls.from_options(options, models or {}, where)
