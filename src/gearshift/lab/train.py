"""Train a classifier router from outcomes (scikit-learn, imported lazily: only training needs it).

- pair form, target `gain`, learner `stack` (the default): two candidates, the logistic heads below
  and a ridge regression of the gain over a TF-IDF block of word 1-2-grams (the plain baseline the
  learning curves compare with), stacked by internal cross-validation on the training pairs
  (`stack_weight`): K-fold out-of-fold predictions of both, each turned into its rank, and the
  convex weight a on the grid 0, .25, .5, .75, 1 whose mix a * rank(p_strong - p_weak) +
  (1 - a) * rank(g) has the best out-of-fold APGR. The cross-validation is noisy on few pairs, so
  the chosen weight is shrunk toward the baseline (a = 0) by the larger of n / (n + STACK_SHRINK)
  and 1 - 1/t^2, t the out-of-fold APGR gain over the baseline in units of its paired bootstrap
  spread: the logistic heads get weight as far as the pairs show they help. (Shrunk toward the even blend instead, the
  default fell below the baseline on MBPP at 50-200 pairs, where the logistic heads are worse than
  random; docs/classifier.md.) Both heads are then refit on all pairs; the ranks at serving are
  against the out-of-fold predictions' quantiles.
- pair form, target `gain`, learner `ridge` (`--learner ridge`, and whenever a prior is given): one head, a ridge regression of the quality
  GAIN of calling the strong model (strong quality - weak quality, in [-1, 1]) on the request
  features; the router's score is (1 + predicted gain) / 2. Predicting the gain routes far better
  than predicting only the weak model's failure: a prompt both models fail gains nothing from the
  strong model. With a `prior` (an artifact trained on other outcomes) the fit is warm-started:
  it penalises ||w - lambda * w_prior|| instead of ||w||, with the prior's weight lambda chosen on
  the new pairs themselves (`prior_weight`), so a prior that does not transfer is dropped.
- learner `logistic` (default; also what `weak-fails` and the multi form use): each head is an L2-regularised logistic regression predicting one model's quality (the
  chance its answer is acceptable); quality in [0, 1] that is not 0/1 is a soft label (a success
  with weight q and a failure with weight 1 - q). Target `gain` then has a head for the weak and
  for the strong model and the score (1 + p_strong - p_weak) / 2.
- pair form, target `weak-fails`: one head, score = 1 - p_weak (RouteLLM's formulation).
- multi form: one head per model; the router picks by target or lambda (see routers.classifier).

The artifact records the feature settings and fitted state, a fingerprint of the training data,
the date, the settings and, when a hold-out share is given, the lab's metrics on the hold-out
prompts from a fit on the rest (the saved weights are then refit on all prompts).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from gearshift.lab.replay import requests as requests_of
from gearshift.learned import artifact as art
from gearshift.learned.classifier import GAIN_HEAD, KIND, Model
from gearshift.learned.encoders import Encoder
from gearshift.learned.features import FeatureSpec, Featurizer
from gearshift.outcomes.table import Outcomes

Form = Literal["pair", "multi"]
Target = Literal["gain", "weak-fails"]
Learner = Literal["stack", "ridge", "logistic"]
STACK_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the logistic heads' share of the stacked score
STACK_FOLDS = 5
# Pairs at which the cross-validated weight counts half and the baseline half. Set before measuring,
# not tuned (one value tried): the order of n where the out-of-fold APGR's noise (about 1/sqrt(n))
# falls below the gaps between candidates the learning curves show (a few hundredths to a tenth).
STACK_SHRINK = 200
STACK_MIN_PAIRS = 20  # fewer scored pairs: no cross-validation, the baseline's gain head alone
TFIDF_BITS = 18  # the stack's TF-IDF block when the feature settings name none
RANK_QUANTILES = 101
STACK_RESAMPLES = 200  # paired bootstrap of the out-of-fold APGR, for the evidence of the chosen weight


@dataclass(frozen=True)
class TrainSettings:
    """How to train. `c` maps a model to its head's inverse regularisation (default `c_default`)."""

    form: Form = "pair"
    target: Target = "gain"
    # stack: the logistic heads and a TF-IDF gain ridge, weighted by cross-validation (pair form, target
    # gain); ridge: one head regressing the gain (what a prior warm-starts); logistic: a head per model.
    # Measured with benchmarks/learning_curves.py (docs/classifier.md).
    learner: Learner = "stack"
    alpha: float = 1.0  # ridge learner: L2 penalty (features are L2-normalised per block)
    weak: str | None = None
    strong: str | None = None
    models: tuple[str, ...] | None = None  # multi form: which models (default: all)
    features: FeatureSpec = field(default_factory=FeatureSpec)
    c_strong: float = 1.0
    c_weak: float = 0.3  # the weak head is noisier; tuned by 5-fold CV on RouteLLM MMLU
    c_default: float = 0.5
    max_iter: int = 2000
    holdout: float = 0.0  # share of prompts held out to record metrics in the artifact
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = self.features.to_json()
        d["models"] = list(self.models) if self.models else None
        return d


def default_features(outcomes: Outcomes) -> FeatureSpec:
    """Default feature settings: metadata `task` as a feature (and crossed with words) when the data has it."""
    if "task" in outcomes.meta and len(set(map(str, outcomes.meta["task"]))) > 1:
        return FeatureSpec(metadata_keys=("task",), cross_key="task")
    return FeatureSpec()


def _pair(outcomes: Outcomes, s: TrainSettings) -> tuple[str, str]:
    if s.weak and s.strong:
        return s.weak, s.strong
    if len(outcomes.models) != 2 and not (s.weak or s.strong):
        raise ValueError(f"outcomes have {len(outcomes.models)} models: name --weak and --strong "
                         f"(models: {outcomes.models})")
    q = np.nanmean(outcomes.quality, axis=0)
    order = [outcomes.models[i] for i in np.argsort(q)]
    weak = s.weak or next(m for m in order if m != s.strong)
    strong = s.strong or next(m for m in reversed(order) if m != weak)
    return weak, strong


def head_models(outcomes: Outcomes, s: TrainSettings) -> tuple[list[str], dict[str, Any]]:
    """The models that get a head, and the score rule of the artifact."""
    if s.form == "multi":
        return list(s.models or outcomes.models), {"rule": "multi"}
    weak, strong = _pair(outcomes, s)
    for m in (weak, strong):
        outcomes.index(m)
    if s.target == "weak-fails":
        return [weak], {"rule": "weak-fails", "weak": weak, "strong": strong}
    if s.target != "gain":
        raise ValueError(f"target {s.target!r}: allowed: gain, weak-fails")
    if s.learner == "ridge":
        return [GAIN_HEAD], {"rule": "predicted-gain", "weak": weak, "strong": strong}
    if s.learner == "stack":
        return [weak, strong, GAIN_HEAD], {"rule": "stack", "weak": weak, "strong": strong}
    if s.learner != "logistic":
        raise ValueError(f"learner {s.learner!r}: allowed: stack, ridge, logistic")
    return [weak, strong], {"rule": "gain", "weak": weak, "strong": strong}


def _csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, dim: int):  # type: ignore[no-untyped-def]
    import scipy.sparse as sp

    X = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, dim))
    X.sum_duplicates()  # n-grams sharing a bucket: one entry, their sum (what serving's dot product does)
    return X


def _used_columns(X: Any) -> tuple[Any, np.ndarray]:
    """X restricted to the columns some row uses, and those columns.

    An L2-penalised linear fit gives a column no row uses a weight of 0, so fitting on the used
    columns alone gives the same weights; with hashed blocks of 2^18 columns and a few thousand used,
    the solvers then run many times faster."""
    cols = np.flatnonzero(np.bincount(X.indices, minlength=X.shape[1]))
    return X[:, cols], cols


def _scatter(w: np.ndarray, cols: np.ndarray, dim: int) -> np.ndarray:
    full = np.zeros(dim)
    full[cols] = w
    return full


def _fit_head(X: Any, q: np.ndarray, c: float, max_iter: int) -> tuple[np.ndarray, float]:
    """Logistic regression on soft labels q in [0, 1]; returns (weights, intercept)."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    keep = ~np.isnan(q)
    dim = X.shape[1]
    (X, cols), q = _used_columns(X[keep]), q[keep]
    if np.all(np.isin(q, (0.0, 1.0))):
        Xf, y, w = X, q.astype(int), None
    else:
        Xf = sp.vstack([X, X]).tocsr()
        y = np.concatenate([np.ones(len(q), int), np.zeros(len(q), int)])
        w = np.concatenate([q, 1.0 - q])
    if len(np.unique(y if w is None else y[w > 0])) < 2:
        # Every answer was right (or wrong): a constant head, no model to fit.
        rate = float(np.clip(np.mean(q), 1e-4, 1 - 1e-4))
        return np.zeros(dim), float(np.log(rate / (1 - rate)))
    m = LogisticRegression(C=c, max_iter=max_iter)
    m.fit(Xf, y, sample_weight=w)
    return _scatter(m.coef_[0], cols, dim), float(m.intercept_[0])


def prior_weight(z: np.ndarray, y: np.ndarray, min_pairs: int = 10) -> float:
    """The prior's weight on new pairs: the slope of the gain y on the prior's predictions z, shrunk
    by its t statistic (lambda = slope * (1 - 1/t^2), 0 when t <= 1 or the slope is negative).

    A prior that predicts the new pairs' gain is kept at its fitted scale, one that does not is
    dropped; with fewer than `min_pairs` pairs there is nothing to judge it by and it is kept (1)."""
    n = len(y)
    if n < min_pairs:
        return 1.0
    zc, yc = z - z.mean(), y - y.mean()
    szz, syy = float(zc @ zc), float(yc @ yc)
    if szz <= 1e-12 or syy <= 1e-12:
        return 0.0
    slope = float(zc @ yc) / szz
    r2 = min(float(zc @ yc) ** 2 / (szz * syy), 1 - 1e-9)
    t2 = r2 * (n - 2) / (1 - r2)
    if slope <= 0 or t2 <= 1:
        return 0.0
    return slope * (1.0 - 1.0 / t2)


@dataclass(frozen=True)
class Prior:
    """A warm start: the weights of a gain-ridge artifact trained on other outcomes (its featurizer too)."""

    artifact: art.Artifact

    def __post_init__(self) -> None:
        h = self.artifact.header
        if h.get("kind") != KIND or h.get("form") != "pair" or (h.get("score") or {}).get("rule") != "predicted-gain":
            raise ValueError("a prior must be a two-model classifier artifact trained with the ridge learner "
                             f"(score rule 'predicted-gain'); this one has form {h.get('form')!r} and rule "
                             f"{(h.get('score') or {}).get('rule')!r}: retrain it with `gearshift lab train`")

    @property
    def weights(self) -> np.ndarray:
        return np.asarray(self.artifact.arrays["W"][:, 0], dtype=np.float64)

    def featurizer(self, encoder: Encoder | None) -> Featurizer:
        f = self.artifact.header["features"]
        return Featurizer.from_json(f["spec"], f["state"], encoder, self.artifact.arrays)


def _fit_gain(X: Any, y: np.ndarray, alpha: float, w0: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Ridge regression of y on X penalising ||w - w0||: w0 + the ridge fit of the residual y - X w0."""
    from sklearn.linear_model import Ridge

    keep = ~np.isnan(y)
    X, y = X[keep], y[keep]
    dim = X.shape[1]
    base = X @ w0 if w0 is not None else np.zeros(len(y))
    if len(y) < 2:
        return (np.zeros(dim) if w0 is None else w0.copy()), float(np.mean(y - base)) if len(y) else 0.0
    Xc, cols = _used_columns(X)
    m = Ridge(alpha=alpha, solver="sparse_cg", tol=1e-6, max_iter=5000)
    m.fit(Xc, y - base)
    w = _scatter(np.asarray(m.coef_, dtype=np.float64), cols, dim)
    return (w if w0 is None else w + w0), float(m.intercept_)


def fit(outcomes: Outcomes, settings: TrainSettings | None = None, *, prior: art.Artifact | None = None,
        encoder: Encoder | None = None, progress: Callable[[str], None] | None = None) -> art.Artifact:
    """Fit a classifier router on all of `outcomes`; returns the artifact (not yet saved).

    `prior`: a ridge artifact trained on other outcomes to warm-start from (its feature settings win)."""
    s = settings or TrainSettings(features=default_features(outcomes))
    from threadpoolctl import threadpool_limits

    # One BLAS thread: the problems are small, and on a shared machine extra threads thrash (10x slower).
    with threadpool_limits(1):
        return _fit(outcomes, s, prior, encoder, progress or (lambda _m: None))


def _fit(outcomes: Outcomes, s: TrainSettings, prior: art.Artifact | None, encoder: Encoder | None,
         say: Callable[[str], None]) -> art.Artifact:
    models, score = head_models(outcomes, s)
    warm = Prior(prior) if prior is not None else None
    if warm is not None and score["rule"] != "predicted-gain":
        raise ValueError("a prior warm-starts the ridge learner only (pair form, target gain, learner ridge)")
    reqs = requests_of(outcomes)
    say(f"featurizing {len(reqs)} prompts")
    if warm is not None:
        fz = warm.featurizer(encoder)
        if fz.dim != warm.weights.shape[0]:
            raise ValueError("the prior's weights do not match its features; the prior artifact is corrupt")
        features = fz.spec
    else:
        features = s.features
        if score["rule"] == "stack" and not features.tfidf_bits:
            features = replace(features, tfidf_bits=TFIDF_BITS)
        fz = Featurizer(features, encoder=encoder).fit(reqs)
    X = _csr(*fz.transform(reqs), fz.dim)
    W = np.zeros((fz.dim, len(models)), dtype=np.float32)
    b = np.zeros(len(models))
    prior_record: dict[str, Any] | None = None
    if score["rule"] == "predicted-gain":
        y = _gain(outcomes, score["weak"], score["strong"])
        w0 = None
        if warm is not None:
            pw = warm.weights
            ok = ~np.isnan(y)
            lam = prior_weight(np.asarray(X[ok] @ pw), y[ok])
            w0 = lam * pw
            prior_record = {"outcomes": warm.artifact.header.get("training", {}).get("outcomes"),
                            "fingerprint": warm.artifact.header.get("training", {}).get("fingerprint"),
                            "weights_sha256": warm.artifact.digest(), "weight": lam}
            say(f"prior weight {lam:.3f} on {int(ok.sum())} pairs")
        say(f"fitting the gain head (ridge, alpha={s.alpha:g})")
        w, b[0] = _fit_gain(X, y, s.alpha, w0)
        W[:, 0] = w
    elif score["rule"] == "stack":
        q = np.asarray(outcomes.quality, dtype=float)
        qw, qs = q[:, outcomes.index(score["weak"])], q[:, outcomes.index(score["strong"])]
        Xh, Xg = X[:, :fz.tfidf_offset], X[:, fz.tfidf_offset:]
        say(f"stacking: {STACK_FOLDS}-fold out-of-fold predictions of both candidates")
        score.update(stack_weight(outcomes, Xh, Xg, score["weak"], score["strong"], s))
        say(f"weight of the logistic heads: {score['weight']:.3f} (cross-validation's {score['cv']['best']:g})")
        ww, b[0] = _fit_head(Xh, qw, s.c_weak, s.max_iter)
        ws, b[1] = _fit_head(Xh, qs, s.c_strong, s.max_iter)
        wg, b[2] = _fit_gain(Xg, qs - qw, s.alpha)
        W[:fz.tfidf_offset, 0], W[:fz.tfidf_offset, 1], W[fz.tfidf_offset:, 2] = ww, ws, wg
    else:
        for k, m in enumerate(models):
            c = s.c_strong if m == score.get("strong") else s.c_weak if m == score.get("weak") else s.c_default
            say(f"fitting head {k + 1}/{len(models)}: {m} (C={c:g})")
            w, b[k] = _fit_head(X, np.asarray(outcomes.quality[:, outcomes.index(m)], dtype=float), c, s.max_iter)
            W[:, k] = w
    cost_models = [score["weak"], score["strong"]] if score["rule"] in ("predicted-gain", "stack") else models
    costs = {m: float(np.nanmean(outcomes.cost[:, outcomes.index(m)])) for m in cost_models}
    heads = [{"model": GAIN_HEAD, "link": "identity",
              "predicts": f"quality of {score['strong']} - quality of {score['weak']}"} if m == GAIN_HEAD else
             {"model": m, "link": "logistic", "predicts": f"P(answer of {m} is acceptable)"} for m in models]
    header: dict[str, Any] = {
        "kind": KIND,
        "form": s.form,
        "models": models if s.form == "multi" else [score["weak"], score["strong"]],
        "heads": heads,
        "score": score,
        "threshold": 0.5 if s.form == "pair" else None,
        "costs": costs,
        "features": {"spec": features.to_json(), "state": fz.state_json()},
        "encoder": encoder.describe() if encoder is not None else {"kind": "none"},
        "training": {
            "outcomes": outcomes.name,
            "prompts": len(outcomes),
            "fingerprint": fingerprint(outcomes, cost_models, features),
            "settings": {**s.to_json(), "features": features.to_json()},
            "prior": prior_record,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "library": _library_versions(),
        },
        "metrics": {},
    }
    return art.Artifact(header=header, arrays={"W": W, "b": b, **fz.arrays()})


def stack_weight(outcomes: Outcomes, Xh: Any, Xg: Any, weak: str, strong: str,
                 s: TrainSettings) -> dict[str, Any]:
    """The stack's weight of the logistic heads (over Xh) against the gain ridge (over Xg), chosen by
    K-fold cross-validation on these pairs and shrunk toward 0 (the ridge, the baseline) by the larger
    of n / (n + STACK_SHRINK) and the evidence 1 - 1/t^2; with the rank quantiles to serve.

    Returns the score rule's fields: `weight`, `ranks` (quantiles of each candidate's out-of-fold
    predictions) and `cv` (folds, pairs, each weight's out-of-fold APGR, the best, the shrinkage)."""
    from gearshift.lab import metrics
    from gearshift.lab.bootstrap import resample_matrix
    from gearshift.lab.replay import ScoreOrder, sweep_scores

    n = len(outcomes)
    folds = min(STACK_FOLDS, n) if n >= STACK_MIN_PAIRS else 1
    d, g, rd, rg = out_of_fold(outcomes, Xh, Xg, weak, strong, s, folds)
    apgr: dict[float, float] = {}
    for a in STACK_WEIGHTS if folds > 1 else ():
        v = float(metrics.apgr(sweep_scores(a * rd + (1 - a) * rg, outcomes, weak, strong)))
        apgr[a] = v if np.isfinite(v) else -np.inf
    # The best out-of-fold APGR; ties go to the weight nearest the baseline.
    best = max(apgr, key=lambda a: (apgr[a], -a)) if apgr and max(apgr.values()) > -np.inf else 0.0
    t = 0.0
    if best > 0:
        # The evidence for the best weight over the baseline: its out-of-fold APGR gain in units of the
        # gain's paired bootstrap spread (the same resamples of the pairs for both).
        counts = resample_matrix(n, STACK_RESAMPLES, s.seed)
        boot = [np.asarray(metrics.apgr(ScoreOrder.from_scores(a * rd + (1 - a) * rg).curve(
            outcomes, weak, strong, weights=counts)), dtype=float) for a in (best, 0.0)]
        spread = float(np.nanstd(boot[0] - boot[1]))
        t = (apgr[best] - apgr[0.0]) / spread if spread > 0 else 0.0
    # As much of the best weight as the pairs' number or the evidence supports, whichever is more:
    # n / (n + STACK_SHRINK) (a fixed prior), or 1 - 1/t^2 (as prior_weight's rule, 0 when t <= 1).
    shrink = max(n / (n + STACK_SHRINK), 1.0 - 1.0 / t**2 if t > 1 else 0.0) if apgr else 0.0
    levels = np.linspace(0.0, 1.0, min(RANK_QUANTILES, n)) if n else np.zeros(1)
    return {"weight": best * shrink,
            "ranks": {"heads": np.quantile(d, levels).tolist() if n else [0.0],
                      "gain": np.quantile(g, levels).tolist() if n else [0.0]},
            "cv": {"folds": folds, "pairs": n, "apgr": {f"{a:g}": (v if np.isfinite(v) else None) for a, v in apgr.items()},
                   "best": best, "t": t, "shrink": shrink}}


def out_of_fold(outcomes: Outcomes, Xh: Any, Xg: Any, weak: str, strong: str, s: TrainSettings,
                folds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """K-fold predictions of both candidates on the pairs they were not fitted on: the logistic heads'
    p_strong - p_weak, the gain ridge's g, and each one's rank within its fold in (0, 1) (each fold's
    model has its own scale). One fold: in-sample predictions (too few pairs to hold any out)."""
    q = np.asarray(outcomes.quality, dtype=float)
    qw, qs = q[:, outcomes.index(weak)], q[:, outcomes.index(strong)]
    n = len(qw)
    fold = fold_of(n, folds, s.seed)
    d, g, rd, rg = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    for k in range(folds):
        te = fold == k
        tr = ~te if folds > 1 else te
        ww, bw = _fit_head(Xh[tr], qw[tr], s.c_weak, s.max_iter)
        ws, bs = _fit_head(Xh[tr], qs[tr], s.c_strong, s.max_iter)
        wg, bg = _fit_gain(Xg[tr], qs[tr] - qw[tr], s.alpha)
        Xt = Xh[te]
        d[te] = _sigmoid(Xt @ ws + bs) - _sigmoid(Xt @ ww + bw)
        g[te] = Xg[te] @ wg + bg
        m = int(te.sum())
        rd[te], rg[te] = (_ranks(d[te]) - 0.5) / m, (_ranks(g[te]) - 0.5) / m
    return d, g, rd, rg


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of x, ties sharing their mean rank (scipy.stats.rankdata's `average`)."""
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    below = np.cumsum(counts) - counts
    r: np.ndarray = (below + (counts + 1) / 2.0)[inv]
    return r


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))
    return out


def _gain(outcomes: Outcomes, weak: str, strong: str) -> np.ndarray:
    q = np.asarray(outcomes.quality, dtype=float)
    return q[:, outcomes.index(strong)] - q[:, outcomes.index(weak)]


def fingerprint(outcomes: Outcomes, models: Sequence[str], spec: FeatureSpec) -> str:
    """sha256 of what the weights depend on: prompts, the used metadata, the heads' qualities."""
    cols = [outcomes.index(m) for m in models]
    meta = [np.asarray(outcomes.meta[k], dtype=str) for k in spec.metadata_keys if k in outcomes.meta]
    if spec.cross_key and spec.cross_key in outcomes.meta and spec.cross_key not in spec.metadata_keys:
        meta.append(np.asarray(outcomes.meta[spec.cross_key], dtype=str))
    return art.fingerprint(outcomes.prompts, list(models), np.asarray(outcomes.quality[:, cols], dtype=np.float64),
                           *meta)


def _library_versions() -> dict[str, str]:
    import sklearn

    import gearshift

    return {"gearshift": getattr(gearshift, "__version__", "?"), "numpy": np.__version__,
            "scikit-learn": sklearn.__version__}


def model_of(artifact: art.Artifact, encoder: Encoder | None = None) -> Model:
    """The serving model of an in-memory artifact (what the gateway would load from its file)."""
    return Model(artifact, encoder)


def pair_scores(model: Model, outcomes: Outcomes) -> np.ndarray:
    """The router's score of every prompt (pair form)."""
    return np.asarray(model.pair_score(model.predict_many(requests_of(outcomes))), dtype=float)


def fold_of(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """Each of n rows' fold, 0..folds-1: a seeded random split into folds of equal size (within one)."""
    return np.random.default_rng(seed).permutation(n) % max(folds, 1)


def cross_fit_scores(outcomes: Outcomes, settings: TrainSettings, folds: int = 5, seed: int = 0, *,
                     chained: bool = False, prior: art.Artifact | None = None,
                     encoder: Encoder | None = None) -> np.ndarray:
    """Each prompt's pair score from a model `fit` (with `settings`, `prior`) on other folds (fold_of(n, folds,
    seed) splits): out-of-fold scores, what the training procedure scores on prompts it did not see.

    `chained`: fold k is scored by a model fitted on folds 0..k-1 only (fold 0, fitted on nothing, is NaN), so
    each fold's scores depend on no later fold's outcomes: tests of the folds in turn are then independent under
    "no signal" (see lab.retrain.prove_learner); a plain cross-fit's folds learn from each other's noise."""
    if folds < 2:
        raise ValueError(f"{folds} folds: a cross-fit needs at least 2")
    fold = fold_of(len(outcomes), folds, seed)
    scores = np.full(len(outcomes), np.nan)
    for k in range(1 if chained else 0, folds):
        test = np.flatnonzero(fold == k)
        train = np.flatnonzero(fold < k) if chained else np.flatnonzero(fold != k)
        model = model_of(fit(outcomes.subset(train), settings, prior=prior, encoder=encoder), encoder)
        scores[test] = pair_scores(model, outcomes.subset(test))
    return scores


def holdout_metrics(outcomes: Outcomes, settings: TrainSettings, encoder: Encoder | None = None,
                    n_boot: int = 200, prior: art.Artifact | None = None) -> dict[str, Any]:
    """Fit on (1 - holdout) of the prompts, evaluate on the rest with the lab's metrics."""
    from gearshift.lab.bootstrap import bootstrap_curve
    from gearshift.lab.replay import sweep_scores
    from gearshift.lab.signal import Signal

    train_idx, test_idx = _holdout_split(len(outcomes), settings)
    train, test = outcomes.subset(train_idx), outcomes.subset(test_idx)
    a = fit(train, settings, encoder=encoder, prior=prior)
    model = model_of(a, encoder)
    out: dict[str, Any] = {"holdout_prompts": len(test), "train_prompts": len(train), "seed": settings.seed}
    if model.form == "pair":
        rule = model.score_rule
        scores = pair_scores(model, test)
        stats = pair_stats()
        est = bootstrap_curve(scores, test, rule["weak"], rule["strong"], stats, n=n_boot, seed=settings.seed)
        curve = sweep_scores(scores, test, rule["weak"], rule["strong"])
        out.update({k: {"value": e.value, "low": e.low, "high": e.high} for k, e in est.items()})
        out["signal"] = Signal(est["apgr"], len(test)).to_json()  # the same resamples as the figures above
        out["at_default_threshold"] = asdict(curve.at(0.5))
    else:
        out.update(multi_metrics(model, test))
    return out


def _holdout_split(n: int, settings: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    """(train, hold-out) prompt indices: a seeded random `settings.holdout` share held out."""
    perm = np.random.default_rng(settings.seed).permutation(n)
    cut = int(round(n * (1 - settings.holdout)))
    return np.sort(perm[:cut]), np.sort(perm[cut:])


def pair_stats() -> dict[str, Callable[[Any], Any]]:
    """The two-model figures of a curve: APGR, CPT(50%), CPT(80%)."""
    from gearshift.lab import metrics

    return {"apgr": metrics.apgr, "cpt50": lambda c: metrics.cpt(c, 0.5), "cpt80": lambda c: metrics.cpt(c, 0.8)}


def learning_curve(outcomes: Outcomes, settings: TrainSettings, shares: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                   encoder: Encoder | None = None, prior: art.Artifact | None = None) -> list[dict[str, Any]]:
    """Hold-out metrics of routers fitted on growing shares of the training prompts (nested subsets).

    Tells whether more outcomes (e.g. more shadow pairs) would still improve the router: a curve
    still rising at the full share is limited by data, a flat one by its features."""
    from gearshift.lab.replay import sweep_scores

    if not 0 < settings.holdout < 1:
        raise ValueError("a learning curve needs a hold-out share between 0 and 1 (--holdout)")
    train_idx, test_idx = _holdout_split(len(outcomes), settings)
    test = outcomes.subset(test_idx)
    order = np.random.default_rng(settings.seed + 1).permutation(train_idx)
    points = []
    for share in shares:
        n = max(2, int(round(len(order) * share)))
        model = model_of(fit(outcomes.subset(np.sort(order[:n])), settings, encoder=encoder, prior=prior), encoder)
        point: dict[str, Any] = {"share": float(share), "train_prompts": n}
        if model.form == "pair":
            rule = model.score_rule
            curve = sweep_scores(pair_scores(model, test), test, rule["weak"], rule["strong"])
            point.update({k: float(f(curve)) for k, f in pair_stats().items()})
        else:
            point["aiq"] = multi_metrics(model, test)["aiq"]
        points.append(point)
    return points


def multi_decisions(model: Model, outcomes: Outcomes,
                    lambdas: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt and lambda, the (cost, quality) of the model the router picks: two (n, L) arrays.

    The pick is the multi-model router's lambda rule (max predicted quality - lambda x cost)."""
    p = model.predict_many(requests_of(outcomes))
    cols = [outcomes.index(hm["model"]) for hm in model.heads_meta]
    q, c = np.asarray(outcomes.quality[:, cols], float), np.asarray(outcomes.cost[:, cols], float)
    cost = np.array([model.costs[hm["model"]] for hm in model.heads_meta])
    rows = np.arange(len(outcomes))[:, None]
    k = np.stack([np.argmax(p - lam * cost[None, :], axis=1) for lam in lambdas], axis=1)
    return c[rows, k], q[rows, k]


def multi_points(model: Model, outcomes: Outcomes,
                 lambdas: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean cost, mean quality) of the multi-model router at each lambda."""
    c, q = multi_decisions(model, outcomes, lambdas)
    return np.nanmean(c, axis=0), np.nanmean(q, axis=0)


def default_lambdas(model: Model) -> np.ndarray:
    """A sweep of lambda from 0 (best predicted quality) to where only the cheapest model pays off."""
    cost = np.array(list(model.costs.values()))
    spread = max(float(cost.max() - cost.min()), 1e-12)
    return np.concatenate([[0.0], np.geomspace(1e-3 / spread, 1e3 / spread, 120)])


def multi_metrics(model: Model, outcomes: Outcomes) -> dict[str, Any]:
    """AIQ of the router's lambda sweep against the single models' hull (RouterBench), on `outcomes`."""
    from gearshift.lab import metrics

    models = [hm["model"] for hm in model.heads_meta]
    mc, mq = metrics.model_points(outcomes, models)
    rng = (float(np.nanmin(mc)), float(np.nanmax(mc)))
    c, q = multi_points(model, outcomes, default_lambdas(model))
    oracle = metrics.oracle_decisions(outcomes.select_models(models))
    return {"aiq": metrics.aiq(c, q, rng), "zero_router_aiq": metrics.aiq(mc, mq, rng), "cost_range": list(rng),
            "oracle_quality": float(np.nanmean(oracle.quality)), "oracle_cost": float(np.nanmean(oracle.cost))}


def train(outcomes: Outcomes, settings: TrainSettings | None = None, *, encoder: Encoder | None = None,
          progress: Callable[[str], None] | None = None, curve: bool = False,
          prior: art.Artifact | None = None) -> art.Artifact:
    """Fit on all prompts; with settings.holdout > 0, first record hold-out metrics in the artifact.

    curve=True also records a learning curve on the same hold-out (see `learning_curve`)."""
    s = settings or TrainSettings(features=default_features(outcomes))
    say = progress or (lambda _m: None)
    measured: dict[str, Any] = {}
    if s.holdout > 0:
        say(f"measuring on a {s.holdout:.0%} hold-out")
        measured = holdout_metrics(outcomes, s, encoder, prior=prior)
        if curve:
            say("learning curve: fitting on 25/50/75/100% of the training prompts")
            measured["learning_curve"] = learning_curve(outcomes, s, encoder=encoder, prior=prior)
    a = fit(outcomes, s, encoder=encoder, progress=progress, prior=prior)
    a.header["metrics"] = measured
    return a


__all__ = ["Prior", "TrainSettings", "cross_fit_scores", "default_features", "fit", "fold_of", "prior_weight", "holdout_metrics", "learning_curve", "model_of", "pair_stats", "multi_decisions", "multi_metrics",
           "multi_points", "pair_scores", "requests_of", "train"]
