"""Gates in the lab: run the real gates on recorded answers, sweep a cascade's gate threshold, and
train the learned gate.

A cascade asks the cheap model first, gates its answer, and escalates when the gate fails. On
recorded outcomes every part of that is known: the cheap answer's text (so the gate runs on it,
the same code the gateway runs), both answers' quality, and both calls' cost. So the curve of a
cascade is measured exactly like any router's (`replay.sweep_scores`), with two differences that
`cascade_outcomes` builds into the table it sweeps:

- the "weak" column of a cascade costs the cheap call plus its gates; the "strong" column costs
  the cheap call, the gates *and* the expensive call (an escalated request pays for all three);
- the strong-call share of a cascade point is its escalation rate.

Gate scores are computed once per prompt (`gate_scores`), then every threshold is evaluated in one
vectorised pass: quality = the cheap answer's if accepted, else the expensive one's; cost = cheap
+ gates (+ expensive if escalated).

A configured cascade router replayed prompt by prompt is `replay.replay_cascade`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from gearshift.gates.base import Gate
from gearshift.lab.replay import Curve, check_recorded, recorded, requests, sweep_scores
from gearshift.outcomes.table import Outcomes
from gearshift.request import ChatRequest

# --- gate scores on recorded answers ------------------------------------------------------------


@dataclass
class GateScores:
    """What each gate said about each recorded answer of one model.

    scores, passed: (n, k) for k gates; cost: (n,) USD the gates spent (judges only; programmatic
    and learned gates cost nothing); seconds: (n,) time the gates took here, measured; latency: (n,)
    the time they take serving, in seconds: the recorded judging time (`<model>|judge_latency`) where
    a judge was replayed, else the measured time.
    """

    gates: list[Gate]
    model: str
    scores: np.ndarray
    passed: np.ndarray
    cost: np.ndarray
    seconds: np.ndarray
    latency: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.latency is None:
            self.latency = self.seconds

    @property
    def all_passed(self) -> np.ndarray:
        """(n,) True where every gate passed: the answer is accepted at the gates' own thresholds."""
        return np.asarray(self.passed.all(axis=1))

    def index(self, gate: str | int) -> int:
        if isinstance(gate, int):
            return gate
        names = [g.name for g in self.gates]
        if gate not in names:
            raise KeyError(f"no gate named {gate!r}; the gates are {names}")
        return names.index(gate)

    def escalation_scores(self, sweep: str | int | None = None) -> np.ndarray:
        """One score per prompt, higher = escalate first, for sweeping a threshold.

        sweep None: 1 - the lowest gate score (every gate's threshold moved together, as one).
        sweep = a gate (name or index): 1 - that gate's score, and prompts another gate fails
        (at its own threshold) come first (score 2 + ...), ordered by the swept gate: the
        configuration's other gates stay as they are while one threshold moves.
        """
        if sweep is None:
            return 1.0 - self.scores.min(axis=1)
        j = self.index(sweep)
        base = 1.0 - self.scores[:, j]
        others = np.delete(self.passed, j, axis=1)
        fails_other = ~others.all(axis=1) if others.shape[1] else np.zeros(len(base), bool)
        return base + 2.0 * fails_other

    def gate_threshold(self, escalation_threshold: float) -> float | None:
        """The swept gate's threshold of a curve point (escalate when escalation score >= t).

        A gate passes when score >= threshold, so escalating where 1 - score >= t is the gate
        threshold just above 1 - t. None when t > 1: that point escalates part of the prompts another
        gate fails, which no single threshold does (it is a mix of two configurations)."""
        if escalation_threshold > 1.0:
            return None
        return float(np.nextafter(1.0 - escalation_threshold, np.inf)) if np.isfinite(escalation_threshold) else 0.0


def _answers(outcomes: Outcomes, model: str) -> np.ndarray:
    if outcomes.responses is None:
        raise ValueError(f"outcomes {outcomes.name!r} keep no response text: gates need the recorded answers")
    return outcomes.responses[:, outcomes.index(model)]


def gate_scores(gates: Sequence[Gate], outcomes: Outcomes, model: str,
                reqs: Sequence[ChatRequest] | None = None) -> GateScores:
    """Run every gate on `model`'s recorded answer of every prompt (the gates' own `check`)."""
    check_recorded(gates, outcomes, model)
    answers = _answers(outcomes, model)
    column = outcomes.index(model)
    reqs = list(reqs) if reqs is not None else requests(outcomes)
    n, k = len(outcomes), len(gates)
    scores = np.empty((n, k))
    passed = np.empty((n, k), dtype=bool)
    cost = np.zeros(n)
    seconds = np.empty(n)
    judged = np.zeros(n)
    for i in range(n):
        t0 = time.perf_counter()
        text = answers[i] or ""
        completion = recorded(outcomes, i, column, text)  # recorded logprob and judgement, if any
        for j, g in enumerate(gates):
            v = g.check(reqs[i], text, completion)
            scores[i, j], passed[i, j] = v.score, v.passed
            cost[i] += v.cost_usd
            judged[i] += v.latency_ms / 1000
        seconds[i] = time.perf_counter() - t0
    return GateScores(gates=list(gates), model=model, scores=scores, passed=passed, cost=cost, seconds=seconds,
                      latency=np.maximum(seconds, judged))


# --- the cascade as a two-column outcomes table -----------------------------------------------------


def cascade_outcomes(outcomes: Outcomes, weak: str, strong: str, gate_cost: np.ndarray | float = 0.0) -> Outcomes:
    """The table a cascade's sweep reads: columns `weak` (accepted at tier 1) and `strong` (escalated).

    Quality is each model's own; cost of `weak` = cheap call + gates, cost of `strong` = cheap call
    + gates + expensive call: an escalated request pays for every call it made.
    """
    w, s = outcomes.index(weak), outcomes.index(strong)
    cw, cs = np.asarray(outcomes.cost[:, w], float), np.asarray(outcomes.cost[:, s], float)
    g = np.broadcast_to(np.asarray(gate_cost, float), cw.shape)
    cost = np.stack([cw + g, cw + g + cs], axis=1)
    quality = np.asarray(outcomes.quality[:, [w, s]], float)
    latency = None if outcomes.latency is None else np.stack(
        [outcomes.latency[:, w], outcomes.latency[:, w] + outcomes.latency[:, s]], axis=1)
    return Outcomes(prompts=outcomes.prompts, models=[weak, strong], quality=quality, cost=cost, latency=latency,
                    responses=None if outcomes.responses is None else outcomes.responses[:, [w, s]],
                    meta=dict(outcomes.meta), name=f"{outcomes.name} (cascade {weak} -> {strong})",
                    cost_estimated=outcomes.cost_estimated,
                    logprob=None if outcomes.logprob is None else outcomes.logprob[:, [w, s]])


def sweep_cascade(escalation: np.ndarray, outcomes: Outcomes, weak: str, strong: str,
                  gate_cost: np.ndarray | float = 0.0, thresholds: Sequence[float] | np.ndarray | None = None,
                  label: str = "") -> Curve:
    """The curve of a cascade over every escalation threshold, in one vectorised pass.

    escalation: (n,) per prompt, higher escalates first (e.g. GateScores.escalation_scores()).
    A point's strong share is its escalation rate; its cost includes the cheap call and gates on
    every prompt. Metrics (APGR, CPT) apply to it exactly as to any router's curve.
    """
    return sweep_scores(escalation, cascade_outcomes(outcomes, weak, strong, gate_cost), weak, strong,
                        thresholds, label=label)


# --- calibrating a gate's threshold (the judge's, like any other) ---------------------------------------


@dataclass
class GateCalibration:
    """A cascade gate's threshold fitted to a quality floor on one part of the prompts and checked on
    the other, with what the gates cost and the wait they add on escalated requests.

    threshold: the swept gate's threshold (None when the fitted point mixes two configurations).
    calibration: lab.calibrate's result on the cascade table (strong share = escalation rate).
    gate_usd: USD per request the gates (judges) spend, every request paying it.
    added_latency: seconds an escalated request waits before its strong call starts (the cheap answer
    and the gates; the strong call's own time comes on top), p50 and p95, on the held-out part.
    verdicts: the gate's verdict at the threshold against the pair's outcome on the held-out part:
    accepted_worse (cheap accepted, strong was better: quality lost), escalated_needless (escalated,
    cheap was as good: money and time lost), and the others.
    """

    gate: str
    threshold: float | None
    calibration: Any
    gate_usd: float
    escalation_rate: float
    added_latency: tuple[float, float] | None
    verdicts: dict[str, int]
    held_out: int


def calibrate_gate(gs: GateScores, outcomes: Outcomes, weak: str, strong: str, floor: float, *,
                   sweep: str | int | None = None, held_out: float = 0.5, alpha: float = 0.05, n_boot: int = 1000,
                   seed: int = 0) -> GateCalibration:
    """Fit the threshold of gate `sweep` (None: all gates together) of a cascade `weak` -> `strong` so it
    keeps `floor` of always-strong quality (lab.calibrate's QualityFloor, fixed-sequence bootstrap bound)
    on a random `1 - held_out` of the prompts; report it on the rest."""
    from gearshift.lab.calibrate import QualityFloor, calibrate_scores

    esc = gs.escalation_scores(sweep)
    table = cascade_outcomes(outcomes, weak, strong, gs.cost)
    perm = np.random.default_rng(seed).permutation(len(outcomes))
    k = int(round(len(outcomes) * (1 - held_out)))
    cal, test = np.sort(perm[:k]), np.sort(perm[k:])
    c = calibrate_scores(esc[cal], table.subset(cal), weak, strong, QualityFloor(floor), test_scores=esc[test],
                         test=table.subset(test), alpha=alpha, n_boot=n_boot, seed=seed)
    escalated = esc[test] >= c.threshold
    q = np.asarray(outcomes.quality[test][:, [outcomes.index(weak), outcomes.index(strong)]], float)
    worse = q[:, 0] < q[:, 1]
    verdicts = {"accepted_ok": int((~escalated & ~worse).sum()), "accepted_worse": int((~escalated & worse).sum()),
                "escalated_needed": int((escalated & worse).sum()),
                "escalated_needless": int((escalated & ~worse).sum())}
    added = None
    if outcomes.latency is not None and escalated.any():
        assert gs.latency is not None
        wait = outcomes.latency[test, outcomes.index(weak)] + gs.latency[test]
        wait = wait[escalated][~np.isnan(wait[escalated])]
        if len(wait):
            added = (float(np.percentile(wait, 50)), float(np.percentile(wait, 95)))
    name = "all gates" if sweep is None else gs.gates[gs.index(sweep)].name
    return GateCalibration(name, gs.gate_threshold(c.threshold), c,
                           float(gs.cost.mean()), float(escalated.mean()) if len(test) else float("nan"), added,
                           verdicts, len(test))


# --- training the learned gate ----------------------------------------------------------------------

Target = Literal["gain", "wrong"]


def gate_labels(outcomes: Outcomes, weak: str, strong: str | None = None, target: Target = "gain",
                pass_bar: float = 0.5) -> np.ndarray:
    """Training labels (1 = escalate): `wrong` = the weak answer's quality is below pass_bar;
    `gain` = the strong answer is better than the weak one (escalating would help)."""
    qw = np.asarray(outcomes.quality[:, outcomes.index(weak)], float)
    if target == "wrong":
        return (qw < pass_bar).astype(int)
    if strong is None:
        raise ValueError("target 'gain' needs the strong model")
    qs = np.asarray(outcomes.quality[:, outcomes.index(strong)], float)
    return (qs > qw).astype(int)


def answer_checks(outcomes: Outcomes, model: str) -> np.ndarray:
    """(n, len(ANSWER_FEATURES)) raw answer checks of `model`'s recorded answers (compute once, reuse per fold)."""
    from gearshift.gates.learned import ANSWER_FEATURES, answer_features

    answers = _answers(outcomes, model)
    reqs = requests(outcomes)
    if not len(outcomes):
        return np.zeros((0, len(ANSWER_FEATURES)))
    return np.stack([answer_features(r.last_user_text() or r.text(), a or "") for r, a in zip(reqs, answers, strict=True)])


def train_learned_gate(outcomes: Outcomes, weak: str, strong: str | None = None, *, target: Target = "gain",
                       rows: np.ndarray | None = None, checks: np.ndarray | None = None, C: float = 1.0,
                       question: Any = "default", answer_bits: int = 14, question_weight: float = 1.0,
                       ngram_weight: float = 1.0, threshold: float = 0.5, pass_bar: float = 0.5) -> Any:
    """Train a learned gate on the weak model's recorded answers (logistic regression, scikit-learn).

    rows: the training prompts (indices or mask; default all). checks: answer_checks(outcomes,
    weak), to reuse across folds. question: a gearshift.learned.features.FeatureSpec for the question
    block, "default" (hashed word and character n-grams, 2**14 buckets each, plus structure) or
    None (no question features). answer_bits: hashed answer word n-grams (0: none). The scaling of
    every block is fitted on the training rows only. Returns a LearnedGateModel (save it with .save).
    """
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from gearshift.gates.learned import ANSWER_FEATURES, LearnedGateModel
    from gearshift.learned.artifact import fingerprint
    from gearshift.learned.features import FeatureSpec, Featurizer

    idx = np.arange(len(outcomes)) if rows is None else np.asarray(rows)
    if idx.dtype == bool:
        idx = np.flatnonzero(idx)
    if checks is None:
        checks = answer_checks(outcomes, weak)
    y = gate_labels(outcomes, weak, strong, target, pass_bar)[idx]
    if len(np.unique(y)) < 2:
        raise ValueError(f"training labels ({target}) are all {int(y[0]) if len(y) else '-'}: nothing to learn")
    reqs_all = requests(outcomes)
    reqs = [reqs_all[i] for i in idx]
    answers = [a or "" for a in _answers(outcomes, weak)[idx]]
    spec = FeatureSpec(word_bits=14, char_bits=14) if question == "default" else question
    featurizer = Featurizer(spec).fit(reqs) if spec is not None else None
    raw = checks[idx]
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    std[std < 1e-9] = 1.0
    model = LearnedGateModel(weights=np.zeros(len(ANSWER_FEATURES) + (featurizer.dim if featurizer else 0)
                                              + ((1 << answer_bits) if answer_bits else 0)),
                             bias=0.0, mean=mean, std=std, featurizer=featurizer, answer_bits=answer_bits,
                             question_weight=question_weight, ngram_weight=ngram_weight, target=target,
                             threshold=threshold)
    data, indices, indptr = [], [], [0]
    for k, (r, a) in enumerate(zip(reqs, answers, strict=True)):
        i, v = model.row(r, a, None, raw[k])
        indices.append(i)
        data.append(v)
        indptr.append(indptr[-1] + len(i))
    X = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), np.asarray(indptr)), shape=(len(idx), model.dim))
    # One BLAS thread: the problem is small, and on a shared machine extra threads thrash (10x slower).
    with threadpool_limits(1):
        clf = LogisticRegression(C=C, max_iter=5000).fit(X, y)
    model.weights = clf.coef_[0].astype(np.float64)
    model.bias = float(clf.intercept_[0])
    model.header = {"trained_on": {"outcomes": outcomes.name, "weak": weak, "strong": strong, "rows": int(len(idx)),
                                   "positives": int(y.sum()), "fingerprint": fingerprint(list(outcomes.prompts[idx]), y)},
                    "C": C}
    return model


__all__ = [
    "GateCalibration", "GateScores", "answer_checks", "calibrate_gate", "cascade_outcomes", "gate_labels",
    "gate_scores", "sweep_cascade",
    "train_learned_gate",
]
