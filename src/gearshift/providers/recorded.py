"""`replay`: answers from recorded outcomes, for demos and tests.

A replay model answers a prompt with what a real model answered when the dataset was recorded
(or, when the dataset kept no text, a short line saying whether that answer was correct), and
tells the caller the recorded quality in a `gearshift_replay` field so demos can score answers.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gearshift.errors import ConfigError, ReplayMiss
from gearshift.providers.base import Completion, Provider, Stream, Usage, estimate_tokens
from gearshift.request import ChatRequest

if TYPE_CHECKING:
    import aiohttp

    from gearshift.config import ModelConfig
    from gearshift.outcomes.table import Outcomes

STREAM_CHUNKS = 4  # a replayed answer streams as this many word groups


@dataclass(slots=True)
class _Table:
    """A loaded dataset: outcomes plus a prompt -> row index."""

    outcomes: Outcomes
    rows: dict[str, int]


# Several replay models usually share one dataset (one column each); the lab's loader returns the
# same Outcomes object to each of them, so the prompt index is built once per Outcomes too.
_INDEXES: dict[int, _Table] = {}
_LOCK = threading.Lock()


def _index(outcomes: Outcomes) -> _Table:
    with _LOCK:  # threads wait for the first indexer instead of indexing again
        table = _INDEXES.get(id(outcomes))
        if table is not None and table.outcomes is outcomes:
            return table
        rows: dict[str, int] = {}
        for i, p in enumerate(outcomes.prompts):
            text = str(p)
            rows.setdefault(text, i)  # a few datasets repeat a prompt: the first recording wins
            rows.setdefault(text.strip(), i)
        table = _INDEXES[id(outcomes)] = _Table(outcomes, rows)
        return table


def _load(spec: str, base_dir: str, model_name: str) -> _Table:
    from gearshift.outcomes import datasets  # cached per process; only replay needs it

    try:
        outcomes = datasets.load(spec, base_dir=base_dir)
    except (ValueError, KeyError, OSError) as e:
        raise ConfigError(f"model {model_name!r}: cannot load replay dataset {spec!r}: {e}") from e
    return _index(outcomes)


class ReplayProvider(Provider):
    """A model that answers with recorded responses from an outcomes dataset."""

    kind = "replay"

    @classmethod
    def check(cls, model: ModelConfig) -> list[str]:
        if model.replay is None:
            return ["a `replay:` block with `dataset` and `column` (provider 'replay' answers from recordings)"]
        return []

    def __init__(self, model: ModelConfig, session: aiohttp.ClientSession | None = None, base_dir: str = ".",
                 outcomes: Outcomes | None = None) -> None:
        super().__init__(model, session, base_dir)
        if model.replay is None:
            raise ConfigError(f"model {model.name!r}: provider 'replay' needs a `replay:` block")
        self.source = model.replay
        self._table: _Table | None = _index(outcomes) if outcomes is not None else None
        self._column: int | None = None
        self._loading: asyncio.Lock | None = None

    @classmethod
    def from_outcomes(cls, model: ModelConfig, outcomes: Outcomes) -> ReplayProvider:
        """A replay model over outcomes already in memory (tests, the lab)."""
        return cls(model, None, ".", outcomes=outcomes)

    def use(self, outcomes: Outcomes) -> None:
        """Answer from `outcomes` from now on (the lab's simulation: a subset, or a relabelled copy)."""
        self._table, self._column = _index(outcomes), None
        self.load()

    # -- loading -----------------------------------------------------------------------------

    def load(self) -> Outcomes:
        """Load (once) and check the dataset and column; safe from any thread."""
        if self._table is None:
            self._table = _load(self.source.dataset, self.base_dir, self.model.name)
        if self._column is None:
            try:
                self._column = self._table.outcomes.index(self.source.column)
            except KeyError as e:
                raise ConfigError(f"model {self.model.name!r}: replay column {self.source.column!r} is not in "
                                  f"dataset {self.source.dataset!r}; it has {self._table.outcomes.models}") from e
        return self._table.outcomes

    async def _ready(self) -> tuple[_Table, int]:
        if self._table is None or self._column is None:
            if self._loading is None:
                self._loading = asyncio.Lock()
            async with self._loading:  # one load per provider; parsing runs off the event loop
                if self._table is None or self._column is None:
                    await asyncio.to_thread(self.load)
        assert self._table is not None and self._column is not None
        return self._table, self._column

    # -- answering ---------------------------------------------------------------------------

    def _row(self, table: _Table, request: ChatRequest) -> int:
        for candidate in (request.last_user_text(), request.text()):
            row = table.rows.get(candidate)
            if row is None:
                row = table.rows.get(candidate.strip())
            if row is not None:
                return row
        prompt = request.last_user_text() or request.text()
        shown = prompt[:60] + ("..." if len(prompt) > 60 else "")
        raise ReplayMiss(f"prompt not recorded for model {self.model.name!r} in dataset "
                         f"{self.source.dataset!r}: {shown!r}")

    def _answer(self, request: ChatRequest) -> tuple[str, dict[str, Any]]:
        assert self._table is not None and self._column is not None
        table, col = self._table, self._column
        row = self._row(table, request)
        o = table.outcomes
        q = float(o.quality[row, col])
        if math.isnan(q):
            raise ReplayMiss(f"model {self.model.name!r} has no recorded answer for this prompt in dataset "
                             f"{self.source.dataset!r} (column {self.source.column!r})")
        text = None
        if o.responses is not None:
            r = o.responses[row, col]
            if isinstance(r, str) and r.strip():
                text = r
        if text is None:  # datasets without response text (MMLU) record only correctness
            verdict = "correct" if q >= 0.5 else "incorrect"
            text = f"[replay] recorded answer of {self.source.column}: {verdict} (quality {q:g})"
        info: dict[str, Any] = {"quality": q, "dataset": self.source.dataset, "column": self.source.column,
                                "row": row}
        cost = float(o.cost[row, col])
        if not math.isnan(cost):
            info["recorded_cost_usd"] = cost
        return text, info

    async def _delay(self) -> None:
        if self.source.latency_ms > 0:
            await asyncio.sleep(self.source.latency_ms / 1000)

    async def complete(self, request: ChatRequest) -> Completion:
        await self._ready()
        text, info = self._answer(request)
        await self._delay()
        # Tokens are estimated even when the dataset recorded a cost: the gateway prices with its
        # own configured prices, and the estimate is labelled as one.
        usage = Usage(request.estimated_tokens(), estimate_tokens(text), estimated=True)
        body = {
            "id": "replay-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model.upstream_id or self.model.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                      "total_tokens": usage.input_tokens + usage.output_tokens},
            "gearshift_replay": info,
        }
        return Completion(body, usage)

    def stream(self, request: ChatRequest) -> Stream:
        return _ReplayStream(self, request)


def split_words(text: str, parts: int = STREAM_CHUNKS) -> list[str]:
    """Split text into at most `parts` groups of whole words; joined they give the text back."""
    words = re.findall(r"\s*\S+\s*", text) or [text]
    size = max(1, math.ceil(len(words) / parts))
    return ["".join(words[i:i + size]) for i in range(0, len(words), size)]


class _ReplayStream(Stream):
    def __init__(self, provider: ReplayProvider, request: ChatRequest) -> None:
        self.provider = provider
        self.request = request
        self.usage = Usage()
        self.text = ""
        self._answer: tuple[str, dict[str, Any]] | None = None

    async def start(self) -> None:
        await self.provider._ready()
        self._answer = self.provider._answer(self.request)  # a miss raises here, before any chunk
        text = self._answer[0]
        self.usage = Usage(self.request.estimated_tokens(), estimate_tokens(text), estimated=True)
        await self.provider._delay()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks()

    async def _chunks(self) -> AsyncGenerator[dict[str, Any], None]:
        if self._answer is None:
            raise RuntimeError("call `await stream.start()` before iterating")
        text, info = self._answer
        model = self.provider.model.upstream_id or self.provider.model.name
        base = {"id": "replay-" + uuid.uuid4().hex[:24], "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}
        usage = self.usage
        for i, piece in enumerate(split_words(text)):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            self.text += piece
            yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await asyncio.sleep(0)  # let other requests run between chunks, as a real stream would
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "gearshift_replay": info}
        options = self.request.body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            yield {**base, "choices": [], "usage": {
                "prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens}}
