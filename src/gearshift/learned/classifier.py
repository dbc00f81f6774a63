"""The classifier router's trained model: features, linear heads and the rule that turns their
predictions into a score. Trained by the lab (gearshift.lab.train), served by routers/classifier.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gearshift.learned.artifact import Artifact, ArtifactError
from gearshift.learned.artifact import load as load_artifact
from gearshift.learned.encoders import Encoder, check_matches
from gearshift.learned.features import Featurizer
from gearshift.request import ChatRequest

KIND = "classifier"
FORMS = ("pair", "multi")


class LinearHeads:
    """K linear heads over sparse features with a logistic link: p = sigmoid(x . W[:, k] + b[k])."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray) -> None:
        if weights.ndim != 2 or bias.shape != (weights.shape[1],):
            raise ArtifactError(f"weights {weights.shape} and bias {bias.shape} do not fit together")
        self.W = np.ascontiguousarray(weights)
        self.b = np.asarray(bias, dtype=np.float64)

    def predict_row(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        z = val @ self.W[idx] + self.b
        p: np.ndarray = 1.0 / (1.0 + np.exp(-z))
        return p

    def predict_csr(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray,
                    chunk: int = 2048) -> np.ndarray:
        """Predictions for CSR rows, `chunk` rows at a time (bounds the gathered weights' memory)."""
        n = len(indptr) - 1
        z = np.zeros((n, self.W.shape[1]))
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            a, b = indptr[lo], indptr[hi]
            if b == a:
                continue
            contrib = self.W[indices[a:b]] * data[a:b, None]
            starts = indptr[lo:hi] - a
            nonempty = indptr[lo + 1:hi + 1] > indptr[lo:hi]
            z[lo:hi][nonempty] = np.add.reduceat(contrib, starts[nonempty], axis=0)
        z += self.b
        return 1.0 / (1.0 + np.exp(-z))


class Model:
    """A loaded artifact: featurizer + heads + how heads become a decision. Shared by both forms."""

    def __init__(self, artifact: Artifact, encoder: Encoder | None = None, source: str = "<artifact>") -> None:
        h = artifact.header
        if h.get("kind") != KIND:
            raise ArtifactError(f"{source}: artifact is for router kind {h.get('kind')!r}, not {KIND!r}")
        self.form = h.get("form")
        if self.form not in FORMS:
            raise ArtifactError(f"{source}: unknown form {self.form!r}; allowed: {FORMS}")
        problem = check_matches(h.get("encoder"), encoder)
        if problem:
            raise ArtifactError(f"{source}: {problem}")
        try:
            self.featurizer = Featurizer.from_json(h["features"]["spec"], h["features"]["state"], encoder)
            self.heads_meta: list[dict[str, Any]] = list(h["heads"])
            self.models: list[str] = list(h["models"])
            self.score_rule: dict[str, Any] = dict(h.get("score", {}))
            self.costs: dict[str, float] = {str(k): float(v) for k, v in h.get("costs", {}).items()}
            self.default_threshold = h.get("threshold")
            self.heads = LinearHeads(artifact.arrays["W"].astype(np.float32), artifact.arrays["b"])
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{source}: artifact is incomplete or malformed ({e!r}); retrain it") from None
        if self.heads.W.shape[0] != self.featurizer.dim:
            raise ArtifactError(f"{source}: weights have {self.heads.W.shape[0]} rows, the features "
                                f"{self.featurizer.dim}; the file is corrupt")
        if len(self.heads_meta) != self.heads.W.shape[1]:
            raise ArtifactError(f"{source}: {len(self.heads_meta)} heads described, {self.heads.W.shape[1]} stored")
        self.head_of = {hm["model"]: k for k, hm in enumerate(self.heads_meta)}
        self.header = h

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None) -> Model:
        return cls(load_artifact(path, kind=KIND), encoder, str(path))

    def predict(self, request: ChatRequest) -> np.ndarray:
        """Predicted quality of each head's model for one request."""
        idx, val = self.featurizer.row(request)
        return self.heads.predict_row(idx, val)

    def predict_many(self, requests: Sequence[ChatRequest]) -> np.ndarray:
        return self.heads.predict_csr(*self.featurizer.transform(requests))

    def pair_score(self, p: np.ndarray) -> np.ndarray:
        """score in [0, 1] from head predictions (last axis = heads)."""
        rule = self.score_rule.get("rule")
        if rule == "gain":
            s, w = self.head_of[self.score_rule["strong"]], self.head_of[self.score_rule["weak"]]
            gain: np.ndarray = np.clip((1.0 + p[..., s] - p[..., w]) / 2.0, 0.0, 1.0)
            return gain
        if rule == "weak-fails":
            return 1.0 - p[..., self.head_of[self.score_rule["weak"]]]
        raise ArtifactError(f"unknown score rule {rule!r}")
