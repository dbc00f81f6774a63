"""Programmatic gates: length, JSON and JSON Schema, regex, contains, refusal, tool calls.

Each is sync, pure and fast: patterns are compiled and schemas checked once, when the gate is built.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError
from pydantic import Field, field_validator, model_validator

from gearshift.gates.base import Gate, GateOptions
from gearshift.request import CHARS_PER_TOKEN, ChatRequest
from gearshift.trace import Verdict

_MAX_REASONS = 5

# ---------------------------------------------------------------------------------------------
# length
# ---------------------------------------------------------------------------------------------


class LengthOptions(GateOptions):
    min: int = Field(default=0, ge=0, description="at least this many characters (or tokens)")
    max: int | None = Field(default=None, ge=0, description="at most this many characters (or tokens)")
    unit: str = Field(default="chars", description="chars, or tokens (estimated: characters / 4)")

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str) -> str:
        if v not in ("chars", "tokens"):
            raise ValueError(f"unit {v!r}: allowed: chars, tokens")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> LengthOptions:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class LengthGate(Gate[LengthOptions]):
    """The answer's length (whitespace at the ends ignored) lies within [min, max]."""

    kind = "length"
    Options = LengthOptions

    def check(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        o = self.options
        n = len(answer.strip())
        size = int(n / CHARS_PER_TOKEN) if o.unit == "tokens" else n
        label = "estimated tokens" if o.unit == "tokens" else "characters"
        if size < o.min:
            return self.verdict(0.0, [f"{size} {label}, fewer than min {o.min}"])
        if o.max is not None and size > o.max:
            return self.verdict(0.0, [f"{size} {label}, more than max {o.max}"])
        return self.verdict(1.0, [f"{size} {label}"])


# ---------------------------------------------------------------------------------------------
# json_schema
# ---------------------------------------------------------------------------------------------

_FENCE_OPEN = re.compile(r"\A```[ \t]*(?:json|JSON|json5|javascript)?[ \t]*\n")
_FENCE_BLOCK = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)\n[ \t]*```", re.S)


def strip_fences(text: str) -> str:
    """The JSON inside a ```json fence that wraps the whole answer; the text itself otherwise.

    Only the outermost fence is removed (first line and last line), so fences inside JSON strings
    (`{"code": "```py\\n...```"}`) stay intact."""
    s = text.strip()
    if s.startswith("```") and s.endswith("```") and len(s) >= 6:
        m = _FENCE_OPEN.match(s)
        if m is not None:
            return s[m.end():-3].strip()
    return s


def parse_json(text: str, extract: bool = False) -> tuple[Any, str | None]:
    """(value, None) when the answer is JSON (fences stripped), else (None, the reason).

    `extract` also accepts JSON embedded in prose: a fenced block, or the outermost {...} / [...]."""
    s = strip_fences(text)
    try:
        return json.loads(s), None
    except ValueError as e:
        first_error = f"not valid JSON: {e}"
    if extract:
        candidates = [m.group(1) for m in _FENCE_BLOCK.finditer(text)]
        for open_, close in (("{", "}"), ("[", "]")):
            i, j = text.find(open_), text.rfind(close)
            if 0 <= i < j:
                candidates.append(text[i:j + 1])
        for c in candidates:
            try:
                return json.loads(c), None
            except ValueError:
                continue
    return None, first_error


def _check_schema(schema: Any) -> type[jsonschema.protocols.Validator]:
    if not isinstance(schema, dict | bool):
        raise SchemaError(f"a JSON Schema is an object or a boolean, got {type(schema).__name__}")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls  # type: ignore[no-any-return]  # jsonschema's validator_for is untyped


class _ValidatorCache:
    """Validators of request schemas, by schema text: clients resend the same schema on every call."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.items: OrderedDict[str, Any] = OrderedDict()

    def get(self, schema: Any) -> Any:
        key = json.dumps(schema, sort_keys=True, default=str)
        v = self.items.get(key)
        if v is None:
            cls = _check_schema(schema)  # raises SchemaError
            v = cls(schema, format_checker=cls.FORMAT_CHECKER)
            self.items[key] = v
            if len(self.items) > self.size:
                self.items.popitem(last=False)
        else:
            self.items.move_to_end(key)
        return v


_REQUEST_VALIDATORS = _ValidatorCache()


def schema_errors(validator: Any, value: Any, limit: int = _MAX_REASONS) -> list[str]:
    """Readable schema violations, `$.path: message`, at most `limit`."""
    errors = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    out = []
    for e in errors[:limit]:
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
        out.append(f"{path}: {e.message}")
    if len(errors) > limit:
        out.append(f"... and {len(errors) - limit} more schema violation(s)")
    return out


def request_schema(request: ChatRequest) -> tuple[bool, Any]:
    """(wants JSON, schema or None) from the request's `response_format`."""
    rf = request.body.get("response_format")
    if not isinstance(rf, dict):
        return False, None
    if rf.get("type") == "json_schema":
        js = rf.get("json_schema")
        return True, js.get("schema") if isinstance(js, dict) else None
    return rf.get("type") == "json_object", None


class JsonSchemaOptions(GateOptions):
    schema_: dict[str, Any] | bool | None = Field(
        default=None, alias="schema",
        description="JSON Schema the answer must satisfy; default: the request's response_format schema")
    extract: bool = Field(default=False, description="accept JSON embedded in prose (a fenced block, or {...})")

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, v: Any) -> Any:
        if v is not None:
            try:
                _check_schema(v)
            except SchemaError as e:
                raise ValueError(f"schema is not a valid JSON Schema: {e.message}") from None
        return v


class JsonSchemaGate(Gate[JsonSchemaOptions]):
    """The answer is JSON (```json fences allowed) and satisfies the schema, when there is one.

    Score: 1 when valid, 0 otherwise; the reasons name each violation by its JSON path."""

    kind = "json_schema"
    Options = JsonSchemaOptions

    def __init__(self, options: JsonSchemaOptions) -> None:
        super().__init__(options)
        self.validator = None
        if options.schema_ is not None:
            cls = _check_schema(options.schema_)
            self.validator = cls(options.schema_, format_checker=cls.FORMAT_CHECKER)

    def check(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        value, problem = parse_json(answer, self.options.extract)
        if problem is not None:
            return self.verdict(0.0, [problem])
        validator = self.validator
        if validator is None:
            _, schema = request_schema(request)
            if schema is not None:
                try:
                    validator = _REQUEST_VALIDATORS.get(schema)
                except SchemaError as e:
                    # The client's schema is broken: escalating cannot fix that, so judge JSON only.
                    return self.verdict(1.0, [f"valid JSON; the request's schema is invalid ({e.message})"],
                                        error="invalid_request_schema")
        if validator is None:
            return self.verdict(1.0, ["valid JSON (no schema)"])
        errors = schema_errors(validator, value)
        if errors:
            return self.verdict(0.0, errors)
        return self.verdict(1.0, ["valid JSON, matches the schema"])


# ---------------------------------------------------------------------------------------------
# regex
# ---------------------------------------------------------------------------------------------


def _as_list(v: str | list[str] | None) -> list[str]:
    return [] if v is None else [v] if isinstance(v, str) else list(v)


class RegexOptions(GateOptions):
    must_match: str | list[str] | None = Field(default=None, description="pattern(s) that must be found")
    must_not_match: str | list[str] | None = Field(default=None, description="pattern(s) that must not be found")
    ignore_case: bool = False

    @field_validator("must_match", "must_not_match")
    @classmethod
    def _compile(cls, v: str | list[str] | None) -> str | list[str] | None:
        for p in _as_list(v):
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"pattern {p!r} does not compile: {e}") from None
        return v

    @model_validator(mode="after")
    def _some(self) -> RegexOptions:
        if not _as_list(self.must_match) and not _as_list(self.must_not_match):
            raise ValueError("give must_match and/or must_not_match")
        return self


class RegexGate(Gate[RegexOptions]):
    """Every `must_match` pattern is found and no `must_not_match` one is (re.search, multiline).

    Score: the fraction of conditions met."""

    kind = "regex"
    Options = RegexOptions

    def __init__(self, options: RegexOptions) -> None:
        super().__init__(options)
        flags = re.MULTILINE | (re.IGNORECASE if options.ignore_case else 0)
        self.must = [re.compile(p, flags) for p in _as_list(options.must_match)]
        self.must_not = [re.compile(p, flags) for p in _as_list(options.must_not_match)]

    def check(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        reasons = [f"no match for {p.pattern!r}" for p in self.must if p.search(answer) is None]
        for p in self.must_not:
            m = p.search(answer)
            if m is not None:
                reasons.append(f"forbidden {p.pattern!r} matched {m.group(0)[:60]!r}")
        total = len(self.must) + len(self.must_not)
        return self.verdict(1.0 - len(reasons) / total, reasons or ["all patterns satisfied"])


# ---------------------------------------------------------------------------------------------
# contains
# ---------------------------------------------------------------------------------------------


class ContainsOptions(GateOptions):
    any: list[str] = Field(default_factory=list, description="at least one of these phrases")
    all: list[str] = Field(default_factory=list, description="every one of these phrases")
    none: list[str] = Field(default_factory=list, description="none of these phrases")
    whole_words: bool = Field(default=False, description="match phrases only as whole words")

    @model_validator(mode="after")
    def _some(self) -> ContainsOptions:
        if not (self.any or self.all or self.none):
            raise ValueError("give at least one of any, all, none (lists of phrases)")
        for key in ("any", "all", "none"):
            if any(not p.strip() for p in getattr(self, key)):
                raise ValueError(f"{key} contains an empty phrase")
        return self


class ContainsGate(Gate[ContainsOptions]):
    """Phrase checks, case-insensitive: any-of, all-of, none-of. Score: the fraction of conditions met
    (`any` counts as one condition, each `all` and `none` phrase as one)."""

    kind = "contains"
    Options = ContainsOptions

    def __init__(self, options: ContainsOptions) -> None:
        super().__init__(options)

        def pat(p: str) -> re.Pattern[str]:
            body = re.escape(p)
            return re.compile(rf"(?<!\w){body}(?!\w)" if options.whole_words else body, re.IGNORECASE)

        self.any = [pat(p) for p in options.any]
        self.all = [(p, pat(p)) for p in options.all]
        self.none = [(p, pat(p)) for p in options.none]

    def check(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        reasons: list[str] = []
        total = 0
        if self.any:
            total += 1
            if not any(p.search(answer) for p in self.any):
                reasons.append(f"none of {self.options.any} found")
        for phrase, p in self.all:
            total += 1
            if p.search(answer) is None:
                reasons.append(f"missing {phrase!r}")
        for phrase, p in self.none:
            total += 1
            if p.search(answer) is not None:
                reasons.append(f"contains forbidden {phrase!r}")
        return self.verdict(1.0 - len(reasons) / total, reasons or ["all phrase conditions met"])


# ---------------------------------------------------------------------------------------------
# refusal
# ---------------------------------------------------------------------------------------------

# First-person refusals and non-answers, looked for near the start of the answer (where a refusal
# says what it is). "cannot" alone is not a refusal: explanations say "a tuple cannot be changed".
_APOS = "['’]"
REFUSAL_PHRASES: tuple[str, ...] = (
    rf"\bI(?:{_APOS}m| am) sorry,? (?:but )?(?:I|that|this)\b",
    rf"\bI(?:{_APOS}m| am) (?:really |very )?sorry\b[^.\n]{{0,40}}\b(?:can{_APOS}?t|cannot|unable|not able)\b",
    r"\bI apologi[sz]e,? (?:but )?(?:I|that|this)\b",
    rf"\bI(?: can{_APOS}?t| cannot| can not| won{_APOS}t| will not| am unable to|{_APOS}m unable to|"
    rf" am not able to|{_APOS}m not able to| must decline to| must refuse to| am not going to|"
    rf"{_APOS}m not going to| do not feel comfortable| don{_APOS}t feel comfortable)\b[^.\n]{{0,30}}"
    r"\b(?:help|assist|provide|comply|fulfil|fulfill|do that|answer|complete|create|generate|write|support|"
    r"engage|share|give|participate|continue|respond|discuss|produce|offer|recommend|make)",
    r"\bI must (?:respectfully )?(?:decline|refuse)\b",
    r"\bAs an AI(?: language model| assistant| model| developed by [A-Z]\w+)?,",
    r"\bAs an AI language model\b",
    rf"\bI{_APOS}m (?:just |only )?an AI\b",
    r"\bI am (?:just |only )?an AI\b",
    rf"\b(?:It|it){_APOS}?s? (?:is )?not appropriate for me to\b",
    r"\bI (?:do not|don['’]t) have (?:enough|sufficient) (?:information|context|details) to\b",
    r"\bthis (?:request|question) (?:goes against|violates)\b",
    r"\bagainst my (?:programming|guidelines|principles|policies)\b",
    rf"\A\W*Unfortunately,? I (?:can{_APOS}?t|cannot|do not|don{_APOS}t|am unable|{_APOS}m unable|won{_APOS}t|"
    rf"will not|am not able|{_APOS}m not able|must)\b",
    # A bare opening (an answer cut after a few tokens: "Unfortunately I", "I apologize") is a
    # refusal in practice: RouterBench's claude-v2 answers so 110 times, all graded wrong.
    rf"\A\W*(?:Unfortunately,?(?: I)?|I apologi[sz]e|I(?:{_APOS}m| am) sorry)\W*\Z",
)
# Every built-in phrase contains one of these (lower-cased, apostrophes unified): a cheap filter
# that skips the slow case-insensitive search for the great majority of answers.
_TRIGGERS = ("sorry", "apologi", "can't", "cant", "cannot", "can not", "won't", "will not", "unable", "not able",
             "decline", "refuse", "an ai", "appropriate", "have enough", "have sufficient", "goes against",
             "violates", "against my", "unfortunately", "not going to", "comfortable")
_BUILTIN_REFUSAL = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PHRASES), re.IGNORECASE)
_REFUSAL_ANYWHERE = re.compile(r"\bAs an AI language model\b", re.IGNORECASE)


class RefusalOptions(GateOptions):
    extra_phrases: list[str] = Field(default_factory=list, description="more regexes that mark a refusal")
    head_chars: int = Field(default=400, ge=20, description="look for refusals in this many leading characters")

    @field_validator("extra_phrases")
    @classmethod
    def _compile(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"phrase pattern {p!r} does not compile: {e}") from None
        return v


class RefusalGate(Gate[RefusalOptions]):
    """Passes unless the answer refuses ("I can't help with that", "As an AI language model", ...)."""

    kind = "refusal"
    Options = RefusalOptions

    def __init__(self, options: RefusalOptions) -> None:
        super().__init__(options)
        self.extra = (re.compile("|".join(f"(?:{p})" for p in options.extra_phrases), re.IGNORECASE)
                      if options.extra_phrases else None)

    def check(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        head = answer.lstrip()[: self.options.head_chars]
        m = None
        low = head.lower().replace("’", "'")
        if any(t in low for t in _TRIGGERS):
            m = _BUILTIN_REFUSAL.search(head)
        if m is None and self.extra is not None:
            m = self.extra.search(head)
        if m is None and len(answer) > len(head) and "as an ai" in answer.lower():
            m = _REFUSAL_ANYWHERE.search(answer)
        if m is not None:
            return self.verdict(0.0, [f"refusal: {m.group(0)!r}"])
        return self.verdict(1.0, ["no refusal"])


def is_refusal(answer: str) -> bool:
    """Does the answer refuse? (The `refusal` gate with default options.)"""
    return not _DEFAULT_REFUSAL.check(_EMPTY_REQUEST, answer).passed


_DEFAULT_REFUSAL = RefusalGate(RefusalOptions(kind="refusal"))
_EMPTY_REQUEST = ChatRequest(body={})

# ---------------------------------------------------------------------------------------------
# tool_calls
# ---------------------------------------------------------------------------------------------


class ToolCallsOptions(GateOptions):
    required: bool | None = Field(
        default=None, description="an answer must call a tool (default: from the request's tool_choice)")


def _declared_tools(request: ChatRequest) -> dict[str, Any]:
    tools: dict[str, Any] = {}
    for t in request.body.get("tools") or []:
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            tools[fn["name"]] = fn.get("parameters")
    for fn in request.body.get("functions") or []:  # the legacy form
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            tools[fn["name"]] = fn.get("parameters")
    return tools


class ToolCallsGate(Gate[ToolCallsOptions]):
    """Each tool call names a declared tool and its arguments are JSON matching that tool's
    `parameters` schema. Needs the completion body. Score: the fraction of well-formed calls."""

    kind = "tool_calls"
    Options = ToolCallsOptions

    def check(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        if completion is None:
            return self.verdict(0.0, ["no completion body to read tool calls from"], error="no_completion")
        try:
            message = completion["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            return self.verdict(0.0, ["completion has no choices[0].message"], error="malformed_completion")
        calls = list(message.get("tool_calls") or [])
        if not calls and isinstance(message.get("function_call"), dict):
            calls = [{"type": "function", "function": message["function_call"]}]
        choice = request.body.get("tool_choice")
        forced = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        required = self.options.required
        if required is None:
            required = choice == "required" or forced is not None
        if not calls:
            if required:
                return self.verdict(0.0, ["no tool call, but the request requires one"])
            return self.verdict(1.0, ["no tool calls"])
        tools = _declared_tools(request)
        reasons: list[str] = []
        bad = 0
        for i, call in enumerate(calls):
            problem = self._problem(call, tools, forced)
            if problem:
                bad += 1
                if len(reasons) < _MAX_REASONS:
                    reasons.append(f"tool call {i}: {problem}")
        return self.verdict(1.0 - bad / len(calls), reasons or [f"{len(calls)} well-formed tool call(s)"])

    @staticmethod
    def _problem(call: Any, tools: dict[str, Any], forced: str | None) -> str | None:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            return "has no function"
        if call.get("type", "function") != "function":
            return f"type {call.get('type')!r} is not 'function'"
        name = fn.get("name")
        if name not in tools:
            return f"calls {name!r}, which is not a declared tool ({sorted(tools) or 'none declared'})"
        if forced is not None and name != forced:
            return f"calls {name!r} but tool_choice requires {forced!r}"
        raw = fn.get("arguments")
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as e:
            return f"{name}: arguments are not valid JSON ({e})"
        if not isinstance(args, dict):
            return f"{name}: arguments must be a JSON object, got {type(args).__name__}"
        schema = tools[name]
        if schema:
            try:
                validator = _REQUEST_VALIDATORS.get(schema)
            except SchemaError:
                return None  # the client's schema is broken; the call cannot be blamed
            errors = schema_errors(validator, args, limit=2)
            if errors:
                return f"{name}: " + "; ".join(errors)
        return None

