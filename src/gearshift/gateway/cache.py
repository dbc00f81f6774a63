"""The exact-match response cache, opt-in per router (`routers.<name>.cache`).

A request identical to one answered before (same router and route, same API, same messages and
parameters that change the answer) is answered from the cache: no upstream call, no shadow, cost 0,
and the trace counts as saved what the route's first model would have charged. Only whole, complete
answers are kept (finish reason stop or tool calls); entries expire after `ttl_seconds` and each
router keeps at most `max_entries`. The cache lives in this process's memory, or with `shared: true`
in the store, where every process and replica using that store finds it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gearshift.config import CacheConfig
from gearshift.jsonfast import canonical, dumps, loads
from gearshift.providers.base import Completion, Usage
from gearshift.request import ChatRequest
from gearshift.route import Route
from gearshift.store.base import TraceStore

log = logging.getLogger("gearshift.cache")

# Body keys that do not change the answer: how it is delivered, who asks, routing hints. Every other key
# (messages, tools, tool_choice, response_format, temperature, top_p, max_tokens, stop, seed, n, logprobs,
# and any parameter gearshift does not know) is part of the key, so an unknown one can only cost a hit.
NOT_IN_KEY = frozenset({"model", "stream", "stream_options", "user", "metadata"})
# Finish reasons of a whole answer: one cut at max_tokens ("length") or filtered is never kept.
COMPLETE = frozenset({"stop", "tool_calls", "function_call"})
# Writes to a shared cache waiting for the store; past this, answers are not kept (the store is slow).
MAX_PENDING_WRITES = 1000


def cache_key(router: str, route: Route, endpoint: str, request: ChatRequest) -> str:
    """sha256 over the canonical JSON of what decides the answer: the router, the route's models and A/B
    arm (a rule or an arm may route the same body elsewhere), the API it came in by, and the client's
    body (its own API's form) less the keys that do not change the answer (NOT_IN_KEY)."""
    body = request.native if request.native is not None else request.body
    doc = {"router": router, "arm": route.arm, "models": route.models(), "endpoint": endpoint,
           "request": {k: v for k, v in body.items() if k not in NOT_IN_KEY}}
    return hashlib.sha256(canonical(doc)).hexdigest()


def cacheable(request: ChatRequest, config: CacheConfig) -> bool:
    """Whether the request's answer may be reused: one choice, and greedy decoding (temperature 0) unless
    the router takes any temperature. No temperature is the upstream's default, 1: a sampled answer."""
    body = request.body
    if body.get("n") not in (None, 1):
        return False
    if config.any_temperature:
        return True
    temperature = body.get("temperature")
    return isinstance(temperature, int | float) and temperature <= 0


def complete(completion: Completion) -> bool:
    """A whole answer worth keeping: its (first) choice finished by itself or with tool calls."""
    choices = completion.body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    return choices[0].get("finish_reason") in COMPLETE


@dataclass(slots=True)
class Lookup:
    """What the cache does for one request: `result` (trace.CACHE_RESULTS) so far, whether to read
    and to keep its answer, and the key."""

    router: str
    config: CacheConfig
    result: str
    key: str = ""
    read: bool = False
    write: bool = False


@dataclass(slots=True)
class Hit:
    """A cached answer: the model that gave it and its chat.completion."""

    model: str
    completion: Completion


class Assembled:
    """A streamed answer's chunks put back together as one chat.completion body, to be kept."""

    __slots__ = ("head", "content", "tool_calls", "finish")

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.content: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None

    def add(self, chunk: Mapping[str, Any]) -> None:
        if not self.head:
            self.head = {k: chunk[k] for k in ("id", "created", "model") if k in chunk}
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.content.append(str(delta["content"]))
            for tc in delta.get("tool_calls") or ():
                mine = self.tool_calls.setdefault(int(tc.get("index", 0)), {"id": "", "type": "function",
                                                                          "function": {"name": "", "arguments": ""}})
                mine["id"] = tc.get("id") or mine["id"]
                fn = tc.get("function") or {}
                mine["function"]["name"] += fn.get("name") or ""
                mine["function"]["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]

    def completion(self, usage: Usage) -> Completion:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) or None}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        elif message["content"] is None:
            message["content"] = ""
        body = {**self.head, "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": self.finish}],
                "usage": {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                          "total_tokens": usage.input_tokens + usage.output_tokens}}
        return Completion(body=body, usage=usage)


class ResponseCache:
    """Every router's cached answers: in this process (an LRU per router) or in the store (`shared`)."""

    def __init__(self, store: TraceStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.local: dict[str, OrderedDict[str, tuple[float, bytes]]] = {}  # router -> key -> (expires, entry)
        self.writing: set[asyncio.Task[None]] = set()
        self.store_failures = 0  # shared reads and writes the store failed: counted as misses, never errors

    def decide(self, config: CacheConfig | None, router: str, route: Route, endpoint: str, request: ChatRequest,
               headers: Mapping[str, str]) -> Lookup | None:
        """What the cache does for a routed request (None: the router has no cache). `cache-control:
        no-cache` skips reading (the fresh answer is kept), `no-store` skips reading and keeping."""
        if config is None:
            return None
        if not cacheable(request, config):
            return Lookup(router, config, "skip")
        control = headers.get("cache-control", "").lower()
        no_store = "no-store" in control
        key = cache_key(router, route, endpoint, request)
        if no_store or "no-cache" in control:
            return Lookup(router, config, "bypass", key, read=False, write=not no_store)
        return Lookup(router, config, "miss", key, read=True, write=True)

    async def get(self, lookup: Lookup) -> Hit | None:
        """The cached answer for a lookup that reads, else None (a failing store is a miss)."""
        if not lookup.read:
            return None
        now = self.clock()
        raw: str | bytes | None
        if lookup.config.shared:
            try:
                raw = await asyncio.to_thread(self.store.cache_get, lookup.key, now)
            except Exception as e:  # noqa: BLE001 - whatever the driver raises, the request goes upstream
                self.store_failures += 1
                log.warning("response cache: the store could not be read (%s); answering upstream", e)
                return None
        else:
            entries = self.local.get(lookup.router)
            if entries is None:
                return None
            found = entries.get(lookup.key)
            if found is None or found[0] <= now:
                if found is not None:
                    del entries[lookup.key]  # expired
                return None
            entries.move_to_end(lookup.key)  # least recently used goes first
            raw = found[1]
        if raw is None:
            return None
        entry = loads(raw)
        usage = Usage(*entry["usage"])
        lookup.result = "hit"
        return Hit(entry["model"], Completion(body=entry["body"], usage=usage))

    def keep(self, lookup: Lookup | None, model: str, completion: Completion) -> None:
        """Keep a whole, complete answer for a lookup that writes (a shared write runs off the request)."""
        if lookup is None or not lookup.write or not complete(completion):
            return
        u = completion.usage
        raw = dumps({"model": model, "body": completion.body, "usage": [u.input_tokens, u.output_tokens, u.estimated]})
        now = self.clock()
        expires = now + lookup.config.ttl_seconds
        if not lookup.config.shared:
            entries = self.local.setdefault(lookup.router, OrderedDict())
            entries[lookup.key] = (expires, raw)
            entries.move_to_end(lookup.key)
            while len(entries) > lookup.config.max_entries:
                entries.popitem(last=False)
            return
        if len(self.writing) >= MAX_PENDING_WRITES:
            self.store_failures += 1
            return
        task = asyncio.get_running_loop().create_task(self._put(lookup, raw.decode(), now, expires))
        self.writing.add(task)
        task.add_done_callback(self.writing.discard)

    async def _put(self, lookup: Lookup, value: str, now: float, expires: float) -> None:
        try:
            await asyncio.to_thread(self.store.cache_put, lookup.key, lookup.router, value, now, expires,
                                    lookup.config.max_entries)
        except Exception as e:  # noqa: BLE001 - a lost entry costs a later miss, nothing more
            self.store_failures += 1
            log.warning("response cache: the store could not keep an answer (%s)", e)

    async def drain(self) -> None:
        """Wait for the shared writes under way (at shutdown, and for tests)."""
        while self.writing:
            await asyncio.gather(*list(self.writing), return_exceptions=True)


__all__ = ["Assembled", "Hit", "Lookup", "ResponseCache", "cache_key", "cacheable", "complete"]
