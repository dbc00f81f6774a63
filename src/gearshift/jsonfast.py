"""JSON on the hot path: orjson (several times faster), with the standard library as a fallback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    def canonical(obj: Any) -> bytes:
        """One encoding per value whatever its keys' order (cache keys hash it)."""
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)

    loads: Callable[[bytes | str], Any] = orjson.loads
    JSONDecodeError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - orjson is a dependency; this keeps odd installs working
    import json

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    def canonical(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()

    loads = json.loads
    JSONDecodeError = json.JSONDecodeError

__all__ = ["JSONDecodeError", "canonical", "dumps", "loads"]
