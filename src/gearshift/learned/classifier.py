"""The classifier router's trained model: features, linear heads and the rule that turns their
predictions into a score. Trained by the lab (gearshift.lab.train), served by routers/classifier.py.

Heads have a link: `logistic` (a head predicting one model's chance of an acceptable answer) or
`identity` (a head predicting the quality gain of the strong model directly, the default learner's).
Score rules: `gain` (two logistic heads: (1 + p_strong - p_weak) / 2), `predicted-gain` (one identity
head g: (1 + g) / 2, clipped to [0, 1]), `weak-fails` (1 - p_weak) and `stack` (the default learner's:
both estimates of the gain, p_strong - p_weak and g, each turned into its rank among out-of-fold
predictions of the training pairs (`Ranks`), mixed as a * rank(p_strong - p_weak) + (1 - a) * rank(g)
with the weight a the training chose)."""

from __future__ import annotations

from bisect import bisect_right
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
LINKS = ("logistic", "identity")
RULES = ("gain", "predicted-gain", "weak-fails", "stack")
GAIN_HEAD = "gain"  # the `model` name of the identity head that predicts strong quality - weak quality


class LinearHeads:
    """K linear heads over sparse features, each with its link: p = link(x . W[:, k] + b[k])."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, links: Sequence[str] | None = None) -> None:
        if weights.ndim != 2 or bias.shape != (weights.shape[1],):
            raise ArtifactError(f"weights {weights.shape} and bias {bias.shape} do not fit together")
        self.W = np.ascontiguousarray(weights)
        self.b = np.asarray(bias, dtype=np.float64)
        links = list(links) if links is not None else ["logistic"] * weights.shape[1]
        if len(links) != weights.shape[1] or any(k not in LINKS for k in links):
            raise ArtifactError(f"head links {links}: need one of {LINKS} per head; retrain the artifact")
        self.logistic = np.array([k == "logistic" for k in links], dtype=bool)
        self._all_logistic = bool(self.logistic.all())
        self._any_logistic = bool(self.logistic.any())

    def _link(self, z: np.ndarray) -> np.ndarray:
        if self._all_logistic:
            p: np.ndarray = 1.0 / (1.0 + np.exp(-z))
            return p
        if self._any_logistic:
            z[..., self.logistic] = 1.0 / (1.0 + np.exp(-z[..., self.logistic]))
        return z

    def predict_row(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        return self._link(val @ self.W[idx] + self.b)

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
        return self._link(z)


class Ranks:
    """A score's rank in [0, 1] among reference scores, from their stored quantiles (linear in between;
    0 below the lowest, 1 from the highest)."""

    def __init__(self, quantiles: Sequence[float]) -> None:
        q = np.asarray(quantiles, dtype=np.float64)
        if q.ndim != 1 or q.size < 1 or not np.all(np.isfinite(q)) or np.any(np.diff(q) < 0):
            raise ArtifactError(f"rank quantiles must be finite non-decreasing numbers, got {q.size}")
        levels = np.linspace(0.0, 1.0, q.size) if q.size > 1 else np.ones(1)
        last = np.r_[q[1:] != q[:-1], True]  # a run of equal quantiles: its highest level (strictly increasing xp)
        self._q, self._levels = q[last], levels[last]
        self.q: list[float] = self._q.tolist()
        self.levels: list[float] = self._levels.tolist()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        r: np.ndarray = np.interp(x, self._q, self._levels, left=0.0, right=1.0)
        return r

    def one(self, x: float) -> float:
        """The rank of one score, in plain floats (numpy's per-call overhead would dominate one number)."""
        q, lv = self.q, self.levels
        if x < q[0]:
            return 0.0
        if x >= q[-1]:
            return 1.0
        k = bisect_right(q, x)  # q[k - 1] <= x < q[k]
        return lv[k - 1] + (lv[k] - lv[k - 1]) * (x - q[k - 1]) / (q[k] - q[k - 1])


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
            self.featurizer = Featurizer.from_json(h["features"]["spec"], h["features"]["state"], encoder,
                                                   artifact.arrays)
            self.heads_meta: list[dict[str, Any]] = list(h["heads"])
            self.models: list[str] = list(h["models"])
            self.score_rule: dict[str, Any] = dict(h.get("score", {}))
            self.costs: dict[str, float] = {str(k): float(v) for k, v in h.get("costs", {}).items()}
            self.default_threshold = h.get("threshold")
            links = [str(hm.get("link", "logistic")) for hm in self.heads_meta]
            self.heads = LinearHeads(artifact.arrays["W"].astype(np.float32), artifact.arrays["b"], links)
        except ArtifactError as e:
            raise ArtifactError(f"{source}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{source}: artifact is incomplete or malformed ({e!r}); retrain it") from None
        if self.heads.W.shape[0] != self.featurizer.dim:
            raise ArtifactError(f"{source}: weights have {self.heads.W.shape[0]} rows, the features "
                                f"{self.featurizer.dim}; the file is corrupt")
        if len(self.heads_meta) != self.heads.W.shape[1]:
            raise ArtifactError(f"{source}: {len(self.heads_meta)} heads described, {self.heads.W.shape[1]} stored")
        self.head_of = {hm["model"]: k for k, hm in enumerate(self.heads_meta)}
        rule = self.score_rule.get("rule")
        if self.form == "pair" and rule not in RULES:
            raise ArtifactError(f"{source}: unknown score rule {rule!r} (this gearshift knows {RULES}); "
                                "upgrade gearshift or retrain the artifact with this version")
        needs = {"gain": ("strong", "weak"), "stack": ("strong", "weak"), "weak-fails": ("weak",)}.get(str(rule), ())
        missing = [self.score_rule.get(r) for r in needs if self.score_rule.get(r) not in self.head_of]
        if rule in ("predicted-gain", "stack") and GAIN_HEAD not in self.head_of:
            missing.append(GAIN_HEAD)
        if self.form == "pair" and missing:
            raise ArtifactError(f"{source}: score rule {rule!r} needs heads {missing}, the artifact has "
                                f"{sorted(self.head_of)}; the file is corrupt")
        self.weight = 0.0
        if self.form == "pair" and rule == "stack":
            a, ranks = self.score_rule.get("weight"), self.score_rule.get("ranks") or {}
            if not isinstance(a, int | float) or not 0.0 <= a <= 1.0:
                raise ArtifactError(f"{source}: stack weight {a!r} is not a number in [0, 1]; the file is corrupt")
            try:
                self.rank_heads, self.rank_gain = Ranks(ranks["heads"]), Ranks(ranks["gain"])
            except (KeyError, TypeError, ValueError) as e:
                raise ArtifactError(f"{source}: the stack's rank quantiles are missing or malformed ({e}); "
                                    "the file is corrupt: retrain it") from None
            self.weight = float(a)
        self.header = h

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None) -> Model:
        return cls(load_artifact(path, kind=KIND), encoder, str(path))

    def predict(self, request: ChatRequest) -> np.ndarray:
        """Each head's prediction for one request (a model's quality, or the strong model's gain)."""
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
        if rule == "predicted-gain":
            g: np.ndarray = np.clip((1.0 + p[..., self.head_of[GAIN_HEAD]]) / 2.0, 0.0, 1.0)
            return g
        if rule == "weak-fails":
            return 1.0 - p[..., self.head_of[self.score_rule["weak"]]]
        if rule == "stack":
            s, w = self.head_of[self.score_rule["strong"]], self.head_of[self.score_rule["weak"]]
            a = self.weight
            mix: np.ndarray = (a * self.rank_heads(p[..., s] - p[..., w])
                               + (1.0 - a) * self.rank_gain(p[..., self.head_of[GAIN_HEAD]]))
            return mix
        raise ArtifactError(f"unknown score rule {rule!r}")
