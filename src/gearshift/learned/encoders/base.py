"""The encoder interface: texts -> (n, dim) float vectors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np


class EncoderError(RuntimeError):
    """An encoder cannot be built or failed to encode; the message says why."""


class Encoder(ABC):
    """Texts -> (n, dim) float vectors. A kind is one module in this package (ENCODERS finds it)."""

    kind: ClassVar[str]
    remote: ClassVar[bool] = False  # True when encode() does network I/O
    dim: int

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: dict[str, Any]) -> Encoder:
        """Build from a router's `encoder:` settings (without `kind`); EncoderError when they are incomplete."""

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What an artifact records: kind, model, dim (never secrets)."""
