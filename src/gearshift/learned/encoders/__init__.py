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

from typing import Any

from gearshift.errors import ConfigError
from gearshift.learned.encoders.base import Encoder, EncoderError
from gearshift.learned.encoders.openai_embeddings import OpenAIEmbeddingsEncoder
from gearshift.learned.encoders.sentence_transformers import SentenceTransformerEncoder
from gearshift.registry import Registry

ENCODERS: Registry[Encoder] = Registry("gearshift.learned.encoders", Encoder, "encoder kind")


def make_encoder(settings: dict[str, Any] | None) -> Encoder | None:
    """Build an encoder from settings: None or {"kind": "none"} gives no encoder (the default).

    {"kind": "sentence-transformers", "model": NAME_OR_PATH}
    {"kind": "openai", "base_url": URL, "model": NAME, "api_key_env": VAR, "dim": N, "timeout": S}
    """
    if not settings or settings.get("kind", "none") == "none":
        return None
    s = dict(settings)
    kind = s.pop("kind")
    try:
        cls = ENCODERS.resolve(kind, "encoder kind")
    except ConfigError:
        raise EncoderError(f"encoder kind {kind!r} unknown; allowed: none, {', '.join(sorted(ENCODERS))}") from None
    return cls.from_settings(s)


def check_matches(recorded: dict[str, Any] | None, encoder: Encoder | None) -> str | None:
    """Why an encoder cannot serve an artifact trained with `recorded` (None if it can)."""
    want = (recorded or {}).get("kind", "none")
    have = encoder.describe() if encoder is not None else {"kind": "none"}
    if want == "none" and have["kind"] == "none":
        return None
    if want != have["kind"] or recorded.get("model") != have.get("model") or recorded.get("dim") != have.get("dim"):  # type: ignore[union-attr]
        return f"the artifact was trained with encoder {recorded or {'kind': 'none'}}, the router is configured with {have}"
    return None


__all__ = ["ENCODERS", "Encoder", "EncoderError", "OpenAIEmbeddingsEncoder", "SentenceTransformerEncoder",
           "check_matches", "make_encoder"]
