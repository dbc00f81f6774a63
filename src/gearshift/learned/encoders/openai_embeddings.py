"""`openai`: any OpenAI-compatible `/v1/embeddings` endpoint (stdlib HTTP only)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np

from gearshift.learned.encoders.base import Encoder, EncoderError


class OpenAIEmbeddingsEncoder(Encoder):
    """An OpenAI-compatible `/v1/embeddings` endpoint, called synchronously (stdlib HTTP only).

    `api_key_env` names the variable holding the key; the key is read per call and never appears in
    descriptions or error messages.
    """

    kind = "openai"
    remote = True

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> OpenAIEmbeddingsEncoder:
        s = settings
        if not s.get("base_url") or not s.get("model"):
            raise EncoderError("encoder kind 'openai' needs `base_url` and `model`")
        return cls(s["base_url"], s["model"], dim=s.get("dim"), api_key_env=s.get("api_key_env"),
                   timeout=float(s.get("timeout", 10.0)))

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
