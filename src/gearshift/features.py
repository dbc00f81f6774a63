"""Request features for learned routers: hashed n-grams, structure and metadata, numpy only.

The same `Featurizer` runs in training (the lab) and in serving (the gateway), so a router scores a
request online exactly as it did offline. It needs no network and no model download:

- word n-grams and character n-grams of the request's last user message, hashed into fixed-size
  blocks (no vocabulary to store; unseen words still land somewhere),
- structure: lengths, turns, code fences, math and digits, script mix (a cheap language signal),
  options and output requirements of the request,
- metadata: one indicator per `key=value` seen in training for the configured keys (e.g. `task`),
- optionally the vector of an encoder (see `gearshift.encoders`).

Every block is L2-normalised on its own so that no block drowns the others whatever its size.
Rows are returned as CSR triples of numpy arrays; the lab wraps them in scipy.sparse to train.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gearshift.request import ChatRequest

if TYPE_CHECKING:
    from gearshift.encoders import Encoder

FEATURES_VERSION = 1

# Odd 64-bit constants: a polynomial base for rolling hashes and a multiplier (Knuth / splitmix
# style) whose high bits spread well, so `(h * MIX) >> (64 - bits)` is a good bucket.
_BASE = np.uint64(0x100000001B3)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_OPTIONS = re.compile(r"(?m)^\s*\(?[A-E][.)]\s")
_LATEX = re.compile(r"\\(?:frac|sqrt|sum|int|begin|cdot|times|alpha|beta|pi|le|ge)\b|\$[^$\n]+\$")
_URL = re.compile(r"https?://")
_MATH_CODES = np.array(sorted(ord(c) for c in "=+-*/^<>%\\|∑∫√≤≥≠±×÷π"), dtype=np.uint32)
_CODE_CODES = np.array(sorted(ord(c) for c in "{}[]();_#"), dtype=np.uint32)

STRUCTURE_NAMES: tuple[str, ...] = (
    "log_chars_conversation", "log_chars_last_user", "log_words_last_user", "log_messages",
    "user_turns", "has_system", "code_fences", "frac_digits", "frac_math", "frac_code_chars",
    "frac_upper", "frac_non_ascii", "frac_cjk", "frac_cyrillic", "frac_arabic_hebrew",
    "log_lines", "question_marks", "has_options", "log_numbers", "mean_word_length", "latex",
    "has_url", "wants_json", "has_tools", "log_max_tokens",
)


@dataclass(frozen=True)
class FeatureSpec:
    """Settings of the featurizer; stored in router artifacts so serving featurizes as training did."""

    word_ngrams: tuple[int, int] = (1, 2)
    word_bits: int = 18
    char_ngrams: tuple[int, int] = (3, 5)
    char_bits: int = 18
    # n-grams look at the tail of the last user message: the question of a few-shot prompt is at the
    # end, and a bound on the text bounds the latency of long prompts.
    max_chars: int = 4000
    structure: bool = True
    metadata_keys: tuple[str, ...] = ()
    # Word n-grams hashed a second time together with this metadata key's value (e.g. `task`): lets a
    # linear model learn cues that matter in one task only, sharing the rest through the plain block.
    cross_key: str | None = None
    cross_bits: int = 18
    version: int = FEATURES_VERSION

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (tuples as lists), equal before and after a save/load round trip."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        data = dict(data)
        for key in ("word_ngrams", "char_ngrams", "metadata_keys"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass
class FeatureState:
    """What the featurizer learns from training requests: metadata vocabulary, structure scaling."""

    metadata_vocab: dict[str, int] = field(default_factory=dict)  # "key=value" -> column in the block
    structure_mean: np.ndarray = field(default_factory=lambda: np.zeros(len(STRUCTURE_NAMES)))
    structure_std: np.ndarray = field(default_factory=lambda: np.ones(len(STRUCTURE_NAMES)))


def _l2(values: np.ndarray) -> np.ndarray:
    norm = float(np.sqrt(np.dot(values, values)))
    return values / norm if norm > 0 else values


def _bucket(h: np.ndarray, bits: int) -> np.ndarray:
    return ((h * _MIX) >> np.uint64(64 - bits)).astype(np.int64)


def _counts(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique indices and their sublinear (log1p) counts, L2-normalised."""
    if idx.size == 0:
        return idx, np.zeros(0)
    uniq, cnt = np.unique(idx, return_counts=True)
    return uniq, _l2(np.log1p(cnt.astype(np.float64)))


def char_ngram_indices(text: str, lo: int, hi: int, bits: int) -> np.ndarray:
    """Hashed buckets of every character n-gram (lo..hi) of `text`, vectorised over positions."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    parts = []
    for n in range(lo, hi + 1):
        m = codes.size - n + 1
        if m <= 0:
            continue
        h = np.full(m, np.uint64(n), dtype=np.uint64)
        for k in range(n):
            h = h * _BASE + codes[k:k + m]
        parts.append(_bucket(h, bits))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def word_ngram_hashes(words: Sequence[str], lo: int, hi: int) -> np.ndarray:
    """64-bit hashes of word n-grams (lo..hi); crc32 is stable across processes, unlike hash()."""
    if not words:
        return np.zeros(0, dtype=np.uint64)
    base = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words))
    parts = []
    for n in range(lo, hi + 1):
        m = base.size - n + 1
        if m <= 0:
            continue
        h = np.full(m, np.uint64(1000 + n), dtype=np.uint64)
        for k in range(n):
            h = h * _BASE + base[k:k + m]
        parts.append(h)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def _frac_in(codes: np.ndarray, sorted_set: np.ndarray) -> float:
    """Share of code points in a small sorted set (vectorised membership by binary search)."""
    if codes.size == 0:
        return 0.0
    pos = np.searchsorted(sorted_set, codes).clip(0, sorted_set.size - 1)
    return float(np.count_nonzero(sorted_set[pos] == codes)) / codes.size


def structure_features(request: ChatRequest, max_chars: int = 4000) -> np.ndarray:
    """Raw (unscaled) structure features, in the order of STRUCTURE_NAMES.

    Lengths count the whole request; shares and patterns look at the last `max_chars` characters of
    the last user message, which bounds the time a huge prompt takes.
    """
    msgs = request.messages
    conv = request.text()
    full = request.last_user_text()
    last = full[-max_chars:]
    words = _WORD.findall(last)
    n = max(len(last), 1)
    codes = np.frombuffer(last.encode("utf-32-le"), dtype=np.uint32)
    body = request.body
    rf = body.get("response_format")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    if not isinstance(max_tokens, int | float):
        max_tokens = 0
    return np.array([
        math.log1p(len(conv)),
        math.log1p(len(full)),
        math.log1p(len(_WORD.findall(full)) if len(full) <= max_chars else len(words) * len(full) / n),
        math.log1p(len(msgs)),
        float(sum(1 for m in msgs if isinstance(m, dict) and m.get("role") == "user")),
        float(any(isinstance(m, dict) and m.get("role") in ("system", "developer") for m in msgs)),
        float(min(conv.count("```") // 2, 5)),
        float(np.count_nonzero((codes >= 48) & (codes <= 57))) / n,
        _frac_in(codes, _MATH_CODES),
        _frac_in(codes, _CODE_CODES),
        float(np.count_nonzero((codes >= 65) & (codes <= 90))) / n,
        float(np.count_nonzero(codes > 127)) / n,
        float(np.count_nonzero(((codes >= 0x3040) & (codes <= 0x9FFF)) | ((codes >= 0xAC00) & (codes <= 0xD7AF)))) / n,
        float(np.count_nonzero((codes >= 0x0400) & (codes <= 0x04FF))) / n,
        float(np.count_nonzero((codes >= 0x0590) & (codes <= 0x06FF))) / n,
        math.log1p(last.count("\n")),
        float(min(last.count("?"), 10)),
        float(bool(_OPTIONS.search(last))),
        math.log1p(len(_NUMBER.findall(last))),
        (sum(len(w) for w in words) / len(words)) if words else 0.0,
        float(bool(_LATEX.search(last))),
        float(bool(_URL.search(last))),
        float(isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")),
        float(bool(body.get("tools"))),
        math.log1p(float(max_tokens)),
    ], dtype=np.float64)


class Featurizer:
    """Turns requests into sparse feature rows. `fit` learns metadata vocabulary and scaling only."""

    def __init__(self, spec: FeatureSpec | None = None, state: FeatureState | None = None,
                 encoder: Encoder | None = None) -> None:
        self.spec = spec or FeatureSpec()
        self.state = state or FeatureState()
        self.encoder = encoder
        self._layout()

    def _layout(self) -> None:
        s = self.spec
        self.word_offset = 0
        self.char_offset = (1 << s.word_bits) if s.word_ngrams[1] > 0 else 0
        self.cross_offset = self.char_offset + ((1 << s.char_bits) if s.char_ngrams[1] > 0 else 0)
        self.meta_offset = self.cross_offset + ((1 << s.cross_bits) if s.cross_key and s.word_ngrams[1] > 0 else 0)
        self.struct_offset = self.meta_offset + len(self.state.metadata_vocab)
        self.enc_offset = self.struct_offset + (len(STRUCTURE_NAMES) if s.structure else 0)
        self.dim = self.enc_offset + (self.encoder.dim if self.encoder is not None else 0)
        self._struct_idx = np.arange(self.struct_offset, self.enc_offset, dtype=np.int64)
        self._inv_std = 1.0 / self.state.structure_std

    def fit(self, requests: Sequence[ChatRequest]) -> Featurizer:
        """Learn the metadata vocabulary and the structure features' mean and spread."""
        vocab: dict[str, int] = {}
        for key in self.spec.metadata_keys:
            values = sorted({str(r.metadata[key]) for r in requests if key in r.metadata})
            for v in values:
                vocab[f"{key}={v}"] = len(vocab)
        if self.spec.structure and requests:
            raw = np.stack([structure_features(r, self.spec.max_chars) for r in requests])
            mean, std = raw.mean(axis=0), raw.std(axis=0)
            std[std < 1e-9] = 1.0
        else:
            mean, std = np.zeros(len(STRUCTURE_NAMES)), np.ones(len(STRUCTURE_NAMES))
        self.state = FeatureState(metadata_vocab=vocab, structure_mean=mean, structure_std=std)
        self._layout()
        return self

    def text_of(self, request: ChatRequest) -> str:
        """The text n-grams look at: the tail of the last user message, lower-cased, spaces collapsed."""
        text = request.last_user_text() or request.text()
        return _WS.sub(" ", text[-self.spec.max_chars:]).strip().lower()

    def row(self, request: ChatRequest, embedding: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and values of one request's features (indices ascending within blocks)."""
        s = self.spec
        text = self.text_of(request)
        idx_parts: list[np.ndarray] = []
        val_parts: list[np.ndarray] = []
        if s.word_ngrams[1] > 0:
            h = word_ngram_hashes(_WORD.findall(text), *s.word_ngrams)
            i, v = _counts(_bucket(h, s.word_bits))
            idx_parts.append(i + self.word_offset)
            val_parts.append(v)
            if s.cross_key and s.cross_key in request.metadata:
                salt = np.uint64(zlib.crc32(f"{s.cross_key}={request.metadata[s.cross_key]}".encode()) | 1)
                i, v = _counts(_bucket(h * salt + _BASE, s.cross_bits))
                idx_parts.append(i + self.cross_offset)
                val_parts.append(v)
        if s.char_ngrams[1] > 0:
            i, v = _counts(char_ngram_indices(text, *s.char_ngrams, s.char_bits))
            idx_parts.append(i + self.char_offset)
            val_parts.append(v)
        if self.state.metadata_vocab:
            cols = [self.state.metadata_vocab.get(f"{k}={request.metadata[k]}") for k in s.metadata_keys
                    if k in request.metadata]
            cols = sorted(c for c in cols if c is not None)
            if cols:
                idx_parts.append(np.asarray(cols, dtype=np.int64) + self.meta_offset)
                val_parts.append(np.full(len(cols), 1.0 / math.sqrt(len(cols))))
        if s.structure:
            z = (structure_features(request, s.max_chars) - self.state.structure_mean) * self._inv_std
            # Clip so one odd request (a 1 MB prompt) cannot dominate its score.
            idx_parts.append(self._struct_idx)
            val_parts.append(np.clip(z, -5.0, 5.0) / math.sqrt(len(STRUCTURE_NAMES)))
        if self.encoder is not None:
            e = self.encoder.encode([self.text_of(request)])[0] if embedding is None else embedding
            idx_parts.append(np.arange(self.enc_offset, self.dim, dtype=np.int64))
            val_parts.append(_l2(np.asarray(e, dtype=np.float64)))
        if not idx_parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(idx_parts), np.concatenate(val_parts)

    def transform(self, requests: Sequence[ChatRequest]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR triple (data, indices, indptr) of many requests; shape (len(requests), self.dim)."""
        embeddings = None
        if self.encoder is not None:
            embeddings = self.encoder.encode([self.text_of(r) for r in requests])
        data: list[np.ndarray] = []
        indices: list[np.ndarray] = []
        indptr = np.zeros(len(requests) + 1, dtype=np.int64)
        for k, r in enumerate(requests):
            i, v = self.row(r, None if embeddings is None else embeddings[k])
            indices.append(i)
            data.append(v)
            indptr[k + 1] = indptr[k] + i.size
        if not requests:
            return np.zeros(0), np.zeros(0, dtype=np.int64), indptr
        return np.concatenate(data), np.concatenate(indices), indptr

    def state_json(self) -> dict[str, Any]:
        """The fitted state as plain JSON (arrays as lists: they are tiny)."""
        return {
            "metadata_vocab": self.state.metadata_vocab,
            "structure_names": list(STRUCTURE_NAMES) if self.spec.structure else [],
            "structure_mean": self.state.structure_mean.tolist(),
            "structure_std": self.state.structure_std.tolist(),
        }

    @classmethod
    def from_json(cls, spec: dict[str, Any], state: dict[str, Any], encoder: Encoder | None = None) -> Featurizer:
        fs = FeatureSpec.from_json(spec)
        if fs.structure and list(state.get("structure_names", [])) != list(STRUCTURE_NAMES):
            raise ValueError("the artifact's structure features differ from this gearshift version's; retrain it")
        st = FeatureState(
            metadata_vocab={str(k): int(v) for k, v in state.get("metadata_vocab", {}).items()},
            structure_mean=np.asarray(state.get("structure_mean", np.zeros(len(STRUCTURE_NAMES))), dtype=np.float64),
            structure_std=np.asarray(state.get("structure_std", np.ones(len(STRUCTURE_NAMES))), dtype=np.float64),
        )
        return cls(fs, st, encoder)

