"""`sentence-transformers`: a local model (optional dependency, imported when built)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gearshift.learned.encoders.base import Encoder, EncoderError


class SentenceTransformerEncoder(Encoder):
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

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> SentenceTransformerEncoder:
        if not settings.get("model"):
            raise EncoderError("encoder kind 'sentence-transformers' needs `model`")
        return cls(settings["model"], device=settings.get("device"))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._st.encode(list(texts), normalize_embeddings=True), dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "dim": self.dim}
