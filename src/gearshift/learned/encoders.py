"""Optional text encoders for learned routers, behind one small interface.

The default router needs none of these: its hashed n-gram features (gearshift.learned.features) cost well
under a millisecond and install nothing. An encoder adds a dense sentence vector to the features:

- `sentence-transformers`: a local model, used only if the package (and the model) is installed
  (PyTorch is ~1.4 GB and ~14 ms per prompt on CPU; an int8 ONNX MiniLM ~4 ms).
- `openai`: any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, vLLM, Ollama, TEI, ...).
  This puts a network call inside `route()`, the one documented exception to a router being pure:
  it must be configured explicitly, with its URL, in the router's options.

An artifact records its encoder's description (`kind`, `model`, `dim`); the router refuses to
serve with a different encoder, since the weights only mean something for the vectors they saw.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


class EncoderError(RuntimeError):
    """An encoder cannot be built or failed to encode; the message says why."""


@runtime_checkable
class Encoder(Protocol):
    """Texts -> (n, dim) float vectors."""

    kind: str
    dim: int
    remote: bool  # True when encode() does network I/O

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]:
        """What an artifact records: kind, model, dim (never secrets)."""
        ...


class SentenceTransformerEncoder:
    """A local sentence-transformers model (imported lazily; optional dependency)."""

    kind = "sentence-transformers"
    remote = False

    def __init__(self, model: str, device: str | None = None) -> None:
        try:
            from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
        except ImportError:
            raise EncoderError("encoder kind 'sentence-transformers' needs the sentence-transformers package "
                               "(pip install sentence-transformers), or use the default features") from None
        self.model = model
        self._st = SentenceTransformer(model, device=device)
        self.dim = int(self._st.get_sentence_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._st.encode(list(texts), normalize_embeddings=True), dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "dim": self.dim}


class OpenAIEmbeddingsEncoder:
    """An OpenAI-compatible `/v1/embeddings` endpoint, called synchronously (stdlib HTTP only).

    `api_key_env` names the variable holding the key; the key is read per call and never appears in
    descriptions or error messages.
    """

    kind = "openai"
    remote = True

    def __init__(self, base_url: str, model: str, dim: int | None = None, api_key_env: str | None = None,
                 timeout: float = 10.0, batch_size: int = 256) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.batch_size = batch_size
        self.dim = dim if dim is not None else int(self.encode(["dimension probe"]).shape[1])

    def _post(self, texts: list[str]) -> list[list[float]]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = json.dumps({"model": self.model, "input": texts}).encode()
        req = urllib.request.Request(f"{self.base_url}/embeddings", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (configured URL)
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise EncoderError(f"embeddings endpoint {self.base_url} answered HTTP {e.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise EncoderError(f"embeddings endpoint {self.base_url} unreachable: {reason}") from None
        except json.JSONDecodeError:
            raise EncoderError(f"embeddings endpoint {self.base_url} returned invalid JSON") from None
        try:
            data = sorted(doc["data"], key=lambda d: d.get("index", 0))
            return [list(map(float, d["embedding"])) for d in data]
        except (KeyError, TypeError, ValueError):
            raise EncoderError(f"embeddings endpoint {self.base_url} returned no `data[].embedding`") from None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            chunk = list(texts[i:i + self.batch_size])
            got = self._post(chunk)
            if len(got) != len(chunk):
                raise EncoderError(f"embeddings endpoint {self.base_url} returned {len(got)} vectors "
                                   f"for {len(chunk)} inputs")
            rows.extend(got)
        out = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
        if hasattr(self, "dim") and out.shape[1] != self.dim:
            raise EncoderError(f"embeddings endpoint {self.base_url} returned {out.shape[1]}-d vectors, "
                               f"expected {self.dim}")
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "dim": self.dim}


def make_encoder(settings: dict[str, Any] | None) -> Encoder | None:
    """Build an encoder from settings: None or {"kind": "none"} gives no encoder (the default).

    {"kind": "sentence-transformers", "model": NAME_OR_PATH}
    {"kind": "openai", "base_url": URL, "model": NAME, "api_key_env": VAR, "dim": N, "timeout": S}
    """
    if not settings or settings.get("kind", "none") == "none":
        return None
    s = dict(settings)
    kind = s.pop("kind")
    if kind == "sentence-transformers":
        return SentenceTransformerEncoder(s["model"], device=s.get("device"))
    if kind == "openai":
        if not s.get("base_url") or not s.get("model"):
            raise EncoderError("encoder kind 'openai' needs `base_url` and `model`")
        return OpenAIEmbeddingsEncoder(s["base_url"], s["model"], dim=s.get("dim"), api_key_env=s.get("api_key_env"),
                                       timeout=float(s.get("timeout", 10.0)))
    raise EncoderError(f"encoder kind {kind!r} unknown; allowed: none, sentence-transformers, openai")


def check_matches(recorded: dict[str, Any] | None, encoder: Encoder | None) -> str | None:
    """Why an encoder cannot serve an artifact trained with `recorded` (None if it can)."""
    want = (recorded or {}).get("kind", "none")
    have = encoder.describe() if encoder is not None else {"kind": "none"}
    if want == "none" and have["kind"] == "none":
        return None
    if want != have["kind"] or recorded.get("model") != have.get("model") or recorded.get("dim") != have.get("dim"):  # type: ignore[union-attr]
        return f"the artifact was trained with encoder {recorded or {'kind': 'none'}}, the router is configured with {have}"
    return None
