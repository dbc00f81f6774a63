"""`rules`: an ordered list of static rules, first match wins, with a default route."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field, field_validator, model_validator

from gearshift.config import Config, ShadowConfig
from gearshift.request import ChatRequest
from gearshift.route import Route
from gearshift.routers.base import Options, Router


class When(Options):
    """Conditions of one rule; all given conditions must hold."""

    min_tokens: int | None = Field(default=None, ge=0, description="estimated prompt tokens at least")
    max_tokens: int | None = Field(default=None, ge=0, description="estimated prompt tokens at most")
    regex: str | None = Field(default=None, description="pattern searched in the conversation text")
    keywords: list[str] | None = Field(default=None, description="any of these words (case-insensitive)")
    scope: str = Field(default="conversation", description="text the regex/keywords look at: conversation | last_user")
    metadata: dict[str, str | list[str]] | None = Field(default=None, description="metadata key -> value(s)")
    min_messages: int | None = Field(default=None, ge=0)
    tools: bool | None = Field(default=None, description="the request declares tools")
    json_output: bool | None = Field(default=None, description="the request asks for JSON (response_format)")
    min_output_tokens: int | None = Field(default=None, ge=0, description="the request's max_tokens at least")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"regex {v!r} does not compile: {e}") from None
        return v

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: str) -> str:
        if v not in ("conversation", "last_user"):
            raise ValueError(f"scope {v!r}: allowed: conversation, last_user")
        return v


class Rule(Options):
    name: str | None = None
    when: When
    model: str


class RulesOptions(Options):
    rules: list[Rule] = Field(default_factory=list)
    default: str

    @model_validator(mode="after")
    def _names(self) -> RulesOptions:
        return self


class Condition:
    """`When` conditions turned into a fast predicate: regexes compiled once, keywords as one alternation.

    Rules use it, and so does anything else that selects requests (e.g. which ones to shadow).
    """

    __slots__ = ("name", "w", "pattern", "keywords", "metadata")

    def __init__(self, when: When, name: str = "") -> None:
        self.name = name
        self.w = when
        self.pattern = re.compile(when.regex) if when.regex else None
        self.keywords = (
            re.compile(r"\b(?:" + "|".join(re.escape(k) for k in when.keywords) + r")\b", re.IGNORECASE)
            if when.keywords else None
        )
        self.metadata = {k: (v if isinstance(v, list) else [v]) for k, v in (when.metadata or {}).items()}

    def matches(self, req: ChatRequest) -> bool:
        w = self.w
        for key, allowed in self.metadata.items():
            if req.metadata.get(key) not in allowed:
                return False
        if w.min_messages is not None and len(req.messages) < w.min_messages:
            return False
        if w.tools is not None and bool(req.body.get("tools")) != w.tools:
            return False
        if w.json_output is not None:
            rf = req.body.get("response_format")
            wants_json = isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
            if wants_json != w.json_output:
                return False
        if w.min_output_tokens is not None:
            asked = req.body.get("max_completion_tokens") or req.body.get("max_tokens") or 0
            if not isinstance(asked, int) or asked < w.min_output_tokens:
                return False
        if w.min_tokens is not None or w.max_tokens is not None:
            n = req.estimated_tokens()
            if w.min_tokens is not None and n < w.min_tokens:
                return False
            if w.max_tokens is not None and n > w.max_tokens:
                return False
        if self.pattern is not None or self.keywords is not None:
            text = req.text() if w.scope == "conversation" else req.last_user_text()
            if self.pattern is not None and not self.pattern.search(text):
                return False
            if self.keywords is not None and not self.keywords.search(text):
                return False
        return True

    def describe(self, req: ChatRequest) -> str:
        w, bits = self.w, []
        if self.metadata:
            bits.append(",".join(f"{k}={req.metadata.get(k)}" for k in self.metadata))
        if w.min_tokens is not None or w.max_tokens is not None:
            bits.append(f"~{req.estimated_tokens()} tokens (estimate)")
        if self.pattern is not None:
            bits.append("regex")
        if self.keywords is not None:
            bits.append("keywords")
        return f"{self.name}" + (f" ({'; '.join(bits)})" if bits else "")


class _Rule(Condition):
    __slots__ = ("model",)

    def __init__(self, index: int, rule: Rule) -> None:
        super().__init__(rule.when, rule.name or f"rule {index}")
        self.model = rule.model


class RulesRouter(Router[RulesOptions]):
    kind = "rules"
    Options = RulesOptions

    def __init__(self, name: str, options: RulesOptions, fallbacks: Sequence[str] = (),
                 shadow: ShadowConfig | None = None) -> None:
        super().__init__(name, options, fallbacks, shadow)
        self._rules = [_Rule(i, r) for i, r in enumerate(options.rules)]

    @classmethod
    def check(cls, name: str, options: RulesOptions, config: Config) -> list[tuple[str, Any, str]]:
        allowed = f"one of the models: {sorted(config.models)}"
        problems = [(f"rules.{i}.model", r.model, allowed) for i, r in enumerate(options.rules)
                    if r.model not in config.models]
        if options.default not in config.models:
            problems.append(("default", options.default, allowed))
        return problems

    def route(self, request: ChatRequest) -> Route:
        for rule in self._rules:
            if rule.matches(request):
                return Route(steps=[self.step(rule.model)], router=self.name,
                             reason=f"rules: {rule.describe(request)} -> {rule.model}")
        return Route(steps=[self.step(self.options.default)], router=self.name,
                     reason=f"rules: default -> {self.options.default}")

    def models(self) -> list[str]:
        out: list[str] = []
        for m in [r.model for r in self.options.rules] + [self.options.default]:
            if m not in out:
                out.append(m)
        return out
