"""The provider interface: one adapter per upstream API, all speaking OpenAI's format to the gateway."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from gearshift.errors import UpstreamError
from gearshift.request import CHARS_PER_TOKEN, ROUTING_KEYS, ChatRequest

if TYPE_CHECKING:
    import aiohttp

    from gearshift.config import ModelConfig


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False  # True when the upstream did not report usage and we counted characters


def estimate_tokens(text: str) -> int:
    """Characters / 4: used only when an upstream reports no usage, and labelled an estimate."""
    return int(len(text) / CHARS_PER_TOKEN)


@dataclass(slots=True)
class Completion:
    """A whole answer in OpenAI `chat.completion` form."""

    body: dict[str, Any]
    usage: Usage
    raw: bytes | None = None  # the upstream's own bytes of `body`, forwarded to the client as they are
    dropped: tuple[str, ...] = ()  # request parameters the adapter dropped or clamped (`drop_params`)

    @property
    def text(self) -> str:
        try:
            return self.body["choices"][0]["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            return ""


class Stream(ABC):
    """An answer arriving as OpenAI `chat.completion.chunk` dicts.

    Iterate it for chunks; `usage` and `text` are complete once iteration ends. An error before the
    first chunk raises UpstreamError from `start()`, so the gateway can still fall back.
    """

    usage: Usage
    text: str
    dropped: tuple[str, ...] = ()  # request parameters the adapter dropped or clamped (`drop_params`)

    @abstractmethod
    async def start(self) -> None:
        """Open the upstream stream; raises UpstreamError when it cannot."""

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    async def aclose(self) -> None:
        """Release the connection (also when the client went away mid-stream)."""


class Provider(ABC):
    """One model's upstream. Built once per model; shares the gateway's pooled HTTP session.

    A provider kind is one module here: its class sets `kind`, and `default_base_url` when models
    may leave `base_url` out (gearshift.providers.PROVIDERS finds it)."""

    kind: ClassVar[str]
    default_base_url: ClassVar[str] = ""  # "" : models of this kind need no base_url
    logprobs: ClassVar[bool] = False  # True: passes `logprobs: true` upstream and returns token logprobs
    responses_api: ClassVar[bool] = False  # True: models may set `api: responses` (native /responses calls)
    # Metadata keys that are routing hints, never forwarded; the executor adds those its config reads.
    routing_keys: frozenset[str] = ROUTING_KEYS

    @classmethod
    def check(cls, model: ModelConfig) -> list[str]:
        """What a model of this kind lacks, each as what is needed (checked at plan time)."""
        return []

    def __init__(self, model: ModelConfig, session: aiohttp.ClientSession | None, base_dir: str = ".") -> None:
        self.model = model
        self.session = session
        self.base_dir = base_dir

    @abstractmethod
    async def complete(self, request: ChatRequest) -> Completion:
        """One non-streamed answer; raises UpstreamError (retryable or not)."""

    @abstractmethod
    def stream(self, request: ChatRequest) -> Stream:
        """A streamed answer; call `await s.start()` then iterate."""

    async def embed(self, request: ChatRequest) -> Completion:
        """Embeddings of the client's `/v1/embeddings` body (`request.native`), as OpenAI's `list` of
        vectors in `Completion.body`; a kind without an embeddings API refuses (non-retryable)."""
        raise UpstreamError(f"model {self.model.name!r} ({self.kind}) has no embeddings API: route "
                            "embeddings to an OpenAI-compatible model", status=400)

    async def close(self) -> None:
        """Release resources the provider owns (the session is the gateway's)."""
