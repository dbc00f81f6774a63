"""The request as routers, gates and providers see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Routers need a cheap size signal without a tokenizer; ~4 characters per token holds for English
# prose and code within ~20%. Every use of it is labelled an estimate.
CHARS_PER_TOKEN = 4.0

# Deepest nesting of arrays and objects a request may have: far beyond any real chat body, and well
# inside what orjson re-encodes for the upstream (254 levels) after parsing (1024).
MAX_DEPTH = 64

METADATA_HEADER_PREFIX = "x-gearshift-"
# Headers with this prefix that are controls, not request metadata.
_NOT_METADATA = {"x-gearshift-trace-id"}
# Metadata keys gearshift's routers read (rules tiers, split users, cascade latency budgets, the lab's
# task): routing hints, never forwarded upstream. Keys a configured rule reads are added to these.
ROUTING_KEYS = frozenset({"tier", "quality", "task", "user", "latency_budget_ms"})


def content_text(content: Any) -> str:
    """Text of an OpenAI message `content`: a string, or a list of parts of which text parts count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return str(content)


def too_deep(raw: bytes, value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether parsed JSON `value` nests arrays and objects deeper than `limit`.

    `raw`'s count of brackets bounds the depth, so most bodies are cleared without walking them."""
    if raw.count(b"[") + raw.count(b"{") <= limit or not isinstance(value, (dict, list)):
        return False
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        for child in v.values() if isinstance(v, dict) else v:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def metadata_from_headers(headers: Any) -> dict[str, str]:
    """`x-gearshift-tier: free` becomes `{"tier": "free"}`; dashes in the rest become underscores."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low.startswith(METADATA_HEADER_PREFIX) and low not in _NOT_METADATA:
            out[low[len(METADATA_HEADER_PREFIX):].replace("-", "_")] = value
    return out


def metadata_keys_read(options: Any) -> set[str]:
    """The metadata keys a router's or shadow policy's settings read: those of any `metadata:` mapping
    in them (rules' `when`, shadow `when`, nested routers)."""
    found: set[str] = set()
    if isinstance(options, dict):
        for key, value in options.items():
            if key == "metadata" and isinstance(value, dict):
                found.update(str(k) for k in value)
            else:
                found |= metadata_keys_read(value)
    elif isinstance(options, list | tuple):
        for value in options:
            found |= metadata_keys_read(value)
    return found


def strip_metadata(body: dict[str, Any], forward: bool, routing_keys: frozenset[str] = ROUTING_KEYS) -> None:
    """Make a body that is about to go upstream (a copy) carry no routing hints: its `metadata` goes,
    or with `forward` only the routing keys go (the model's `forward_metadata`)."""
    meta = body.get("metadata")
    if meta is None:
        return
    if forward and isinstance(meta, dict):
        rest = {k: v for k, v in meta.items() if k not in routing_keys}
        if rest:
            body["metadata"] = rest
            return
    del body["metadata"]


@dataclass(slots=True)
class ChatRequest:
    """An OpenAI chat-completions request body plus gearshift metadata.

    `body` is the client's JSON; it is forwarded untouched apart from `model`. `metadata` merges
    the body's `metadata` object with `x-gearshift-*` headers (headers win).
    """

    body: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)
    client: str | None = None
    source: dict[str, Any] | None = None  # the client's own body, when a dialect translated it to this one
    surface: str = "chat"  # the API `source` speaks (a trace endpoint): a model with that API natively takes it
    _text: str | None = None
    _tokens: int | None = None

    @classmethod
    def from_prompt(cls, prompt: str, metadata: dict[str, str] | None = None, model: str = "") -> ChatRequest:
        """A single-turn request, as the lab builds from an outcomes row."""
        return cls(body={"model": model, "messages": [{"role": "user", "content": prompt}]},
                   metadata=dict(metadata or {}))

    @classmethod
    def from_http(cls, body: dict[str, Any], headers: Any = None, client: str | None = None) -> ChatRequest:
        """Build from a parsed HTTP body and its headers."""
        meta: dict[str, str] = {}
        body_meta = body.get("metadata")
        if isinstance(body_meta, dict):
            meta.update({str(k): str(v) for k, v in body_meta.items()})
        if headers is not None:
            meta.update(metadata_from_headers(headers))
        return cls(body=body, metadata=meta, client=client)

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def messages(self) -> list[dict[str, Any]]:
        msgs = self.body.get("messages")
        return msgs if isinstance(msgs, list) else []

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream", False))

    def text(self) -> str:
        """All message text of the conversation, one message per line block (cached)."""
        if self._text is None:
            self._text = "\n".join(content_text(m.get("content")) for m in self.messages if isinstance(m, dict))
        return self._text

    def last_user_text(self) -> str:
        """The text of the last user message: what the request asks now."""
        for m in reversed(self.messages):
            if isinstance(m, dict) and m.get("role") == "user":
                return content_text(m.get("content"))
        return ""

    def estimated_tokens(self) -> int:
        """Estimated prompt tokens (characters / 4): an estimate, never billed (cached: the trace, the
        rules and a usage-less upstream all ask)."""
        if self._tokens is None:
            self._tokens = int(len(self.text()) / CHARS_PER_TOKEN) + 4 * len(self.messages)
        return self._tokens

    def with_model(self, upstream_model: str) -> dict[str, Any]:
        """The body to forward upstream: the client's, with `model` replaced."""
        out = dict(self.body)
        out["model"] = upstream_model
        return out
