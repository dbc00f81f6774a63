"""The durable record of one request: its route, every call, the verdicts, and what it cost."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

ROLES = ("primary", "escalation", "fallback", "judge", "gate", "shadow", "shadow_judge", "shadow_resolve")
# Shadow work is paid for apart from serving: its calls are not part of a request's cost.
SHADOW_ROLES = ("shadow", "shadow_judge", "shadow_resolve")
# The client-facing APIs a request can arrive by; all of them route, gate, shadow and trace alike.
ENDPOINTS = ("chat", "responses", "messages", "embeddings")
# What the response cache did for a request: answered it, missed (then stored the answer), was bypassed by
# the client (`cache-control: no-cache | no-store`), or skipped it (temperature > 0, n > 1: not cacheable).
CACHE_RESULTS = ("hit", "miss", "bypass", "skip")


class _Entropy:
    """Bytes from the OS's secure generator, drawn a few thousand at a time.

    One `os.urandom` per request was one system call and one release of the GIL per request: the
    trace writer thread took the GIL there and the event loop waited to get it back."""

    def __init__(self, chunk: int = 4096) -> None:
        self._chunk = chunk
        self._lock = threading.Lock()  # ids are made on the event loop and in worker threads
        self._buf = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._pos + n > len(self._buf):
                self._buf, self._pos = os.urandom(self._chunk), 0
            start = self._pos
            self._pos += n
            return self._buf[start:self._pos]

    def forget(self) -> None:
        """Drop the unused bytes (in a forked child: never hand out the parent's)."""
        self._buf, self._pos = b"", 0


_entropy = _Entropy()
os.register_at_fork(after_in_child=_entropy.forget)


def new_trace_id() -> str:
    """32 hex digits: the time in microseconds, then 72 bits from the OS's secure generator.

    The random part makes another request's id unguessable (ids are shown to clients); the time
    prefix makes ids arrive in order, so the store appends to its index instead of inserting at
    random places (a third of the CPU of writing a trace to SQLite, measured at 50,000 traces)."""
    return f"{time.time_ns() // 1000:014x}{_entropy.take(9).hex()}"


@dataclass(slots=True)
class Call:
    """One upstream call (or one gate run) made for a request."""

    model: str
    role: str
    input_tokens: int = 0
    output_tokens: int = 0
    usage_estimated: bool = False  # True when tokens are our estimate, not the upstream's report
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    status: int = 200  # HTTP-like: 200 ok, else the error status
    error: str | None = None  # never holds secrets: built from our own messages
    attempt: int = 1
    response: str | None = None  # answer text, kept for shadow pairs and lab use
    truncated: bool = False  # `response` is the first store.max_answer_chars characters of a longer answer
    started: float = 0.0  # when the call started (epoch seconds; 0 when not known): places it in a request's timeline


@dataclass(slots=True)
class Verdict:
    """What a gate decided about one answer. `score` is in [0, 1]; `passed` is score >= threshold."""

    gate: str
    passed: bool
    score: float
    reasons: list[str] = field(default_factory=list)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    calls: list[Call] = field(default_factory=list)  # a judge's own upstream calls
    error: str | None = None  # set when the gate could not judge (e.g. "unparseable", "judge_failed")

    def to_dict(self) -> dict[str, Any]:
        """The form stored in `Trace.verdicts` (calls are stored once, in `Trace.calls`)."""
        return {"gate": self.gate, "passed": self.passed, "score": self.score, "reasons": list(self.reasons),
                "cost_usd": self.cost_usd, "latency_ms": self.latency_ms, "error": self.error}


@dataclass(slots=True)
class Trace:
    """One request, from route to final answer."""

    router: str
    requested_model: str
    reason: str = ""
    route: list[str] = field(default_factory=list)
    final_model: str | None = None
    status: int = 200
    streamed: bool = False
    endpoint: str = "chat"  # the API it came in by: one of ENDPOINTS
    calls: list[Call] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    client: str | None = None  # the client key's name
    team: str | None = None  # its team, the spend's other owner
    prompt: str | None = None  # the conversation text, when the store records content
    response: str | None = None
    response_truncated: bool = False  # `response` is cut at store.max_answer_chars
    estimated_tokens: int = 0
    score: float | None = None
    threshold: float | None = None  # the scoring router's threshold then (for telemetry; not stored)
    arm: str | None = None  # the A/B arm (the router a split router delegated to)
    shadowed: bool = False
    latency_ms: float = 0.0
    error: str | None = None
    id: str = field(default_factory=lambda: new_trace_id())
    created: float = field(default_factory=time.time)
    revision: int = 0  # 0 when first written; later writes of the same trace (a shadow pair added) count up
    # The response cache (gateway/cache.py): None when the router has none, else CACHE_RESULTS; a hit's
    # saving is what the route's first model would have charged for the cached answer's usage.
    cache: str | None = None
    cache_saved_usd: float = 0.0

    @property
    def cost_usd(self) -> float:
        """What serving the request cost: answers, retries, fallbacks, gates and judges; not shadow work."""
        return sum(c.cost_usd for c in self.calls if c.role not in SHADOW_ROLES)

    @property
    def shadow_cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.calls if c.role in SHADOW_ROLES)

    def cap_answers(self, limit: int) -> None:
        """Cut the answer and every call's answer to `limit` characters, marked as truncated.

        Done before the trace is queued for the store: a long answer must not stay alive (twice,
        in memory and in the database) for as long as the trace waits to be written."""
        if self.response is not None and len(self.response) > limit:
            self.response, self.response_truncated = self.response[:limit], True
        for c in self.calls:
            if c.response is not None and len(c.response) > limit:
                c.response, c.truncated = c.response[:limit], True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cost_usd"] = self.cost_usd
        d["shadow_cost_usd"] = self.shadow_cost_usd
        return d
