"""Request features for learned routers: hashed n-grams, structure and metadata, numpy only.

The same `Featurizer` runs in training (the lab) and in serving (the gateway), so a router scores a
request online exactly as it did offline. It needs no network and no model download:

- word n-grams and character n-grams of the request's last user message, hashed into fixed-size
  blocks (no vocabulary to store; unseen words still land somewhere),
- structure: lengths, turns, code fences, math and digits, script mix (a cheap language signal),
  options and output requirements of the request,
- metadata: one indicator per `key=value` seen in training for the configured keys (e.g. `task`),
- optionally the vector of an encoder (see `gearshift.learned.encoders`),
- optionally (`tfidf_bits` > 0) a TF-IDF block: the word n-grams again, hashed into their own block,
  weighted by raw count x inverse document frequency in the training requests (scikit-learn's
  smoothed idf; 0 for a bucket no training request had, as a vocabulary drops unseen words). It is
  the plain TF-IDF baseline's representation, for the gain head of the default learner.

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
    from gearshift.learned.encoders import Encoder

FEATURES_VERSION = 1

# Odd 64-bit constants: a polynomial base for rolling hashes and a multiplier (Knuth / splitmix
# style) whose high bits spread well, so `(h * MIX) >> (64 - bits)` is a good bucket.
_BASE = np.uint64(0x100000001B3)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_OPTIONS = re.compile(r"(?m)^\s*\(?[A-E][.)]\s")
_LATEX = re.compile(r"\\(?:frac|sqrt|sum|int|begin|cdot|times|alpha|beta|pi|le|ge)\b|\$[^$\n]+\$")
_URL = re.compile(r"https?://")

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
    # Character n-grams (e.g. (3, 5)) are off by default: on RouteLLM MMLU (5-fold CV) they added
    # nothing over word n-grams with the task-crossed block, and they are most of the serving time.
    char_ngrams: tuple[int, int] = (0, 0)
    char_bits: int = 18
    # n-grams look at the tail of the last user message: the question of a few-shot prompt is at the
    # end, and a bound on the text bounds the latency of long prompts.
    max_chars: int = 2000
    structure: bool = True
    metadata_keys: tuple[str, ...] = ()
    # Word n-grams hashed a second time together with this metadata key's value (e.g. `task`): lets a
    # linear model learn cues that matter in one task only, sharing the rest through the plain block.
    cross_key: str | None = None
    cross_bits: int = 18
    # 0: no TF-IDF block. Specs stored before it existed read as 0 (older artifacts load unchanged).
    tfidf_bits: int = 0
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
    idf: np.ndarray | None = None  # per TF-IDF bucket, when spec.tfidf_bits: log((1 + n) / (1 + df)) + 1, 0 if unseen


IDF_ARRAY = "features.idf"  # the name of the idf weights among an artifact's arrays


def _l2(values: np.ndarray) -> np.ndarray:
    norm = float(np.sqrt(np.dot(values, values)))
    return values / norm if norm > 0 else values


def _bucket(h: np.ndarray, bits: int) -> np.ndarray:
    return ((h * _MIX) >> np.uint64(64 - bits)).astype(np.int64)


# Polynomial hashes of any span come from one prefix sum: H[i] = sum_{j<i} c[j] * B^j, so the hash
# of c[s:e] is (H[e] - H[s]) * B^-s (mod 2^64; B is odd, hence invertible). Every n-gram and every
# word of a text is then hashed by a few vectorised operations, with no Python loop over tokens.
_POW_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """B^i and B^-i for i < n (mod 2^64), grown on demand and cached."""
    size = 1 << max(12, (n - 1).bit_length())
    got = _POW_CACHE.get(size)
    if got is None:
        mask, b = (1 << 64) - 1, int(_BASE)
        ib = pow(b, -1, 1 << 64)
        pw, iv = [1] * size, [1] * size
        for i in range(1, size):  # once per size, in Python ints (exact), reduced mod 2^64
            pw[i] = pw[i - 1] * b & mask
            iv[i] = iv[i - 1] * ib & mask
        got = _POW_CACHE[size] = (np.array(pw, np.uint64), np.array(iv, np.uint64))
    return got


# Per n-gram length, a constant added to its hashes so n-grams of different lengths differ.
_N_SALT = [np.uint64(n * int(_MIX) & ((1 << 64) - 1)) for n in range(64)]


def _char_table(pred) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.array([pred(chr(i)) for i in range(256)], dtype=bool)


# Character classes for code points below 256: 1 whitespace, 2 word (\w-like: letters, digits,
# underscore), 0 other. Above U+00FF every code point counts as a word character except general
# and CJK punctuation: close to Python's \w at a fraction of the cost.
_CLASS = np.where(_char_table(lambda ch: ch.isspace()), 1,
                  np.where(_char_table(lambda ch: ch.isalnum() or ch == "_"), 2, 0)).astype(np.uint8)
# Structure categories of ASCII code points: 0 other, 1 digit, 2 upper, 3 math, 4 code, 5 newline,
# 6 question mark; 7 marks "not ASCII".
_CAT = np.zeros(129, dtype=np.int64)
for _ch in "0123456789":
    _CAT[ord(_ch)] = 1
for _ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
    _CAT[ord(_ch)] = 2
for _ch in "=+-*/^<>%\\|":
    _CAT[ord(_ch)] = 3
for _ch in "{}[]();_#":
    _CAT[ord(_ch)] = 4
_CAT[ord("\n")] = 5
_CAT[ord("?")] = 6
_CAT[128] = 7
_DIGITS, _UPPER = b"0123456789", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_MATH, _CODE = b"=+-*/^<>%\\|", b"{}[]();_#"
_DIGIT_RUNS = bytes(49 if 48 <= i <= 57 else 32 for i in range(256))  # digits -> "1", the rest -> " "
_NON_ASCII_MATH_CHARS = "∑∫√≤≥≠±×÷π"


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class _Text:
    """One pass over the tail of the request's last user message: normalised code points, their
    prefix hashes and word spans, shared by the n-gram blocks and the structure features.

    Normalised: lower-cased, runs of whitespace as one space, no leading or trailing space.
    """

    __slots__ = ("tail", "full_len", "c", "prefix", "inv", "starts", "ends")

    def __init__(self, full: str, max_chars: int) -> None:
        self.full_len = len(full)
        self.tail = tail = full[-max_chars:]
        # str methods run in C: lower-case, and whitespace runs as single spaces, stripped.
        norm = " ".join(tail.lower().split())
        c = _codes(norm)
        if norm.isascii():
            word = _CLASS[c] == 2
        else:
            big = c > 255
            word = (_CLASS[np.minimum(c, 255)] == 2) & ~big
            if big.any():
                punct = ((c >= 0x2000) & (c <= 0x206F)) | ((c >= 0x3000) & (c <= 0x303F))
                word |= big & ~punct
        self.c = c = c.astype(np.uint64)
        pw, self.inv = _powers(c.size + 1)
        prefix = np.zeros(c.size + 1, np.uint64)
        np.cumsum(c * pw[: c.size], out=prefix[1:])
        self.prefix = prefix
        padded = np.zeros(word.size + 2, bool)
        padded[1:-1] = word
        change = np.flatnonzero(padded[1:] != padded[:-1])
        self.starts = change[0::2]
        self.ends = change[1::2]

    def span_hashes(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        return (self.prefix[ends] - self.prefix[starts]) * self.inv[starts]

    def word_hashes(self) -> np.ndarray:
        return self.span_hashes(self.starts, self.ends)

    def char_ngram_hashes(self, lo: int, hi: int) -> np.ndarray:
        parts = []
        p, inv = self.prefix, self.inv
        for n in range(lo, hi + 1):
            m = self.c.size - n + 1
            if m > 0:  # slices, not gathers: the n-grams start at 0..m-1
                parts.append((p[n:n + m] - p[:m]) * inv[:m] + _N_SALT[n])
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def _distinct(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct hashes and their L2-normalised log(1 + count) weights."""
    if h.size == 0:
        return h, np.zeros(0)
    d, cnt = _counts(h)
    v = np.log1p(cnt)
    return d, v / math.sqrt(float(v @ v))


def _counts(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct hashes of a non-empty array and how often each occurs (np.unique by hand: fewer calls)."""
    h.sort()
    first = np.empty(h.size, bool)
    first[0] = True
    np.not_equal(h[1:], h[:-1], out=first[1:])
    at = np.flatnonzero(first)
    cnt = np.empty(at.size)
    cnt[:-1] = at[1:] - at[:-1]
    cnt[-1] = h.size - at[-1]
    return h[at], cnt


_M64 = (1 << 64) - 1


def _ngram_consts(n: int) -> tuple[np.uint64, list[np.uint64]]:
    """(S_n * B^n, [B^(n-1-k)]) mod 2^64: an n-gram's hash is S_n B^n + sum_k u_k B^(n-1-k)."""
    b = int(_BASE)
    return np.uint64((1000 + n) * pow(b, n, 1 << 64) & _M64), [np.uint64(pow(b, n - 1 - k, 1 << 64)) for k in range(n)]


_NGRAM_CONSTS = [_ngram_consts(n) for n in range(8)]


def ngram_combine(units: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Hashes of runs of lo..hi consecutive unit hashes (word n-grams from word hashes)."""
    parts = []
    for n in range(lo, hi + 1):
        m = units.size - n + 1
        if m <= 0:
            continue
        start, mult = _NGRAM_CONSTS[n] if n < len(_NGRAM_CONSTS) else _ngram_consts(n)
        h: np.ndarray = units[n - 1:n - 1 + m] + start  # the last unit's multiplier is B^0
        for k in range(n - 1):
            h = h + units[k:k + m] * mult[k]
        parts.append(h)
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def word_ngram_indices(words: list[str], lo: int, hi: int, bits: int) -> np.ndarray:
    """Hashed buckets (0 .. 2**bits - 1) of the word n-grams lo..hi of a list of words.

    For features of other texts than the request (the learned gate hashes the cheap answer's words)."""
    text = " ".join(words)
    units = _Text(text, len(text) + 1).word_hashes()
    return _bucket(ngram_combine(units, lo, hi), bits)


def _structure(request: ChatRequest, t: _Text) -> np.ndarray:
    """Raw structure features (order of STRUCTURE_NAMES) from the analysed tail `t`."""
    msgs = request.messages
    conv = request.text()
    tail = t.tail
    n = max(len(tail), 1)
    cjk = cyr = arab = 0
    if tail.isascii():
        # bytes.translate counts a class of characters in C: what it deletes is what was there.
        b = tail.encode("ascii")
        digits = n - len(b.translate(None, _DIGITS))
        upper = n - len(b.translate(None, _UPPER))
        math_chars = n - len(b.translate(None, _MATH))
        code_chars = n - len(b.translate(None, _CODE))
        numbers = len(b.translate(_DIGIT_RUNS).split())
        non_ascii = 0
    else:
        raw = _codes(tail)
        cat = np.bincount(_CAT[np.minimum(raw, 128)], minlength=8)
        digits, upper, math_chars, code_chars, non_ascii = (int(cat[1]), int(cat[2]), int(cat[3]), int(cat[4]),
                                                            int(cat[7]))
        hi = raw[raw > 127]
        math_chars += sum(tail.count(ch) for ch in _NON_ASCII_MATH_CHARS)
        cjk = int(np.count_nonzero(((hi >= 0x3040) & (hi <= 0x9FFF)) | ((hi >= 0xAC00) & (hi <= 0xD7AF))))
        cyr = int(np.count_nonzero((hi >= 0x0400) & (hi <= 0x04FF)))
        arab = int(np.count_nonzero((hi >= 0x0590) & (hi <= 0x06FF)))
        digit = (raw >= 48) & (raw <= 57)
        numbers = int(np.count_nonzero(digit[1:] & ~digit[:-1])) + int(bool(digit[:1].any()))
    n_words = t.starts.size
    words_full = n_words * t.full_len / n if t.full_len > len(tail) else n_words
    body = request.body
    rf = body.get("response_format")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    if not isinstance(max_tokens, int | float):
        max_tokens = 0
    return np.array([
        math.log1p(len(conv)),
        math.log1p(t.full_len),
        math.log1p(words_full),
        math.log1p(len(msgs)),
        float(sum(1 for m in msgs if isinstance(m, dict) and m.get("role") == "user")),
        float(any(isinstance(m, dict) and m.get("role") in ("system", "developer") for m in msgs)),
        float(min(conv.count("```") // 2, 5)),
        digits / n,
        math_chars / n,
        code_chars / n,
        upper / n,
        non_ascii / n,
        cjk / n,
        cyr / n,
        arab / n,
        math.log1p(tail.count("\n")),
        float(min(tail.count("?"), 10)),
        float(bool(_OPTIONS.search(t.tail))),
        math.log1p(numbers),
        float(t.ends.sum() - t.starts.sum()) / n_words if n_words else 0.0,
        float(bool(_LATEX.search(t.tail))),
        float(bool(_URL.search(t.tail))),
        float(isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")),
        float(bool(body.get("tools"))),
        math.log1p(float(max_tokens)),
    ], dtype=np.float64)


def _user_text(request: ChatRequest) -> str:
    return request.last_user_text() or request.text()


def structure_features(request: ChatRequest, max_chars: int = 2000) -> np.ndarray:
    """Raw (unscaled) structure features, in the order of STRUCTURE_NAMES.

    Lengths count the whole request; shares and patterns look at the last `max_chars` characters of
    the last user message, which bounds the time a huge prompt takes.
    """
    return _structure(request, _Text(_user_text(request), max_chars))


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
        self._tfidf = s.tfidf_bits > 0 and s.word_ngrams[1] > 0
        self.word_offset = 0
        self.char_offset = (1 << s.word_bits) if s.word_ngrams[1] > 0 else 0
        self.cross_offset = self.char_offset + ((1 << s.char_bits) if s.char_ngrams[1] > 0 else 0)
        self.meta_offset = self.cross_offset + ((1 << s.cross_bits) if s.cross_key and s.word_ngrams[1] > 0 else 0)
        self.struct_offset = self.meta_offset + len(self.state.metadata_vocab)
        self.enc_offset = self.struct_offset + (len(STRUCTURE_NAMES) if s.structure else 0)
        self.tfidf_offset = self.enc_offset + (self.encoder.dim if self.encoder is not None else 0)
        self.dim = self.tfidf_offset + ((1 << s.tfidf_bits) if self._tfidf else 0)
        self._struct_idx = np.arange(self.struct_offset, self.enc_offset, dtype=np.int64)
        self._inv_std = 1.0 / self.state.structure_std
        self._struct_scale = 1.0 / math.sqrt(len(STRUCTURE_NAMES))

    def fit(self, requests: Sequence[ChatRequest]) -> Featurizer:
        """Learn the metadata vocabulary, the structure features' mean and spread, and the idf weights."""
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
        idf = None
        if self.spec.tfidf_bits > 0 and self.spec.word_ngrams[1] > 0:
            # Document frequency of each bucket: distinct (request, bucket) keys, counted per bucket.
            size = 1 << self.spec.tfidf_bits
            keys = [k * size + _bucket(ngram_combine(_Text(_user_text(r), self.spec.max_chars).word_hashes(),
                                                     *self.spec.word_ngrams), self.spec.tfidf_bits)
                    for k, r in enumerate(requests)]
            distinct = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
            df = np.bincount(distinct % size, minlength=size)
            idf = np.where(df > 0, np.log((1.0 + len(requests)) / (1.0 + df)) + 1.0, 0.0)
        self.state = FeatureState(metadata_vocab=vocab, structure_mean=mean, structure_std=std, idf=idf)
        self._layout()
        return self

    def text_of(self, request: ChatRequest) -> str:
        """The text encoders see: the tail of the last user message, lower-cased, spaces collapsed."""
        return " ".join(_user_text(request)[-self.spec.max_chars:].lower().split())

    def row(self, request: ChatRequest, embedding: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and values of one request's features.

        Hashed blocks count each distinct n-gram (by its 64-bit hash, before bucketing) with a
        sublinear weight log(1 + count), L2-normalised per block; the crossed block reuses the word
        block's n-grams and weights. Two n-grams may share a bucket: the index then repeats and the
        dot product (or scipy, in training) adds the two entries.
        """
        s = self.spec
        t = _Text(_user_text(request), s.max_chars)
        idx_parts: list[np.ndarray] = []
        val_parts: list[np.ndarray] = []
        if s.word_ngrams[1] > 0:
            grams = ngram_combine(t.word_hashes(), *s.word_ngrams)
            if self._tfidf and grams.size and self.state.idf is not None:
                d, cnt = _counts(grams.copy())
                b = _bucket(d, s.tfidf_bits)
                w = cnt * self.state.idf[b]
                seen = w > 0
                idx_parts.append(b[seen] + self.tfidf_offset)
                val_parts.append(_l2(w[seen]))
            h, v = _distinct(grams)
            if h.size:
                idx_parts.append(_bucket(h, s.word_bits) + self.word_offset)
                val_parts.append(v)
                if s.cross_key and s.cross_key in request.metadata:
                    salt = np.uint64(zlib.crc32(f"{s.cross_key}={request.metadata[s.cross_key]}".encode()) | 1)
                    idx_parts.append(_bucket(h * salt + _BASE, s.cross_bits) + self.cross_offset)
                    val_parts.append(v)
        if s.char_ngrams[1] > 0:
            h, v = _distinct(t.char_ngram_hashes(*s.char_ngrams))
            if h.size:
                idx_parts.append(_bucket(h, s.char_bits) + self.char_offset)
                val_parts.append(v)
        if self.state.metadata_vocab:
            found = [self.state.metadata_vocab.get(f"{k}={request.metadata[k]}") for k in s.metadata_keys
                     if k in request.metadata]
            cols = sorted(c for c in found if c is not None)
            if cols:
                idx_parts.append(np.asarray(cols, dtype=np.int64) + self.meta_offset)
                val_parts.append(np.full(len(cols), 1.0 / math.sqrt(len(cols))))
        if s.structure:
            z = (_structure(request, t) - self.state.structure_mean) * self._inv_std
            # Clip so one odd request (a 1 MB prompt) cannot dominate its score (ufuncs: np.clip is slower).
            idx_parts.append(self._struct_idx)
            val_parts.append(np.minimum(np.maximum(z, -5.0), 5.0) * self._struct_scale)
        if self.encoder is not None:
            e = self.encoder.encode([self.text_of(request)])[0] if embedding is None else embedding
            idx_parts.append(np.arange(self.enc_offset, self.tfidf_offset, dtype=np.int64))
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

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted state too large for the JSON header (the idf weights), for an artifact's arrays."""
        return {} if self.state.idf is None else {IDF_ARRAY: self.state.idf.astype(np.float32)}

    @classmethod
    def from_json(cls, spec: dict[str, Any], state: dict[str, Any], encoder: Encoder | None = None,
                  arrays: dict[str, np.ndarray] | None = None) -> Featurizer:
        """The featurizer an artifact stored: its spec and state (header) and its arrays (the idf weights)."""
        fs = FeatureSpec.from_json(spec)
        if fs.structure and list(state.get("structure_names", [])) != list(STRUCTURE_NAMES):
            raise ValueError("the artifact's structure features differ from this gearshift version's; retrain it")
        st = FeatureState(
            metadata_vocab={str(k): int(v) for k, v in state.get("metadata_vocab", {}).items()},
            structure_mean=np.asarray(state.get("structure_mean", np.zeros(len(STRUCTURE_NAMES))), dtype=np.float64),
            structure_std=np.asarray(state.get("structure_std", np.ones(len(STRUCTURE_NAMES))), dtype=np.float64),
        )
        if fs.tfidf_bits > 0 and fs.word_ngrams[1] > 0:
            idf = (arrays or {}).get(IDF_ARRAY)
            if idf is None or idf.shape != (1 << fs.tfidf_bits,):
                raise ValueError(f"the artifact's features have a TF-IDF block but its {IDF_ARRAY!r} array is "
                                 "missing or of the wrong size; the file is corrupt: retrain it")
            st.idf = np.asarray(idf, dtype=np.float64)
        return cls(fs, st, encoder)

