"""`learned`: a classifier over features of the question and of the cheap model's answer.

The question alone says little about whether a cheap answer is right (on GSM8K a question-only
router reaches APGR ~0.6); the answer says much more: failed arithmetic, a missing or non-integer
final answer, a cut-off text, numbers that appear from nowhere. This gate scores an answer with a
linear model over three blocks of features, each computed here with numpy only, so the gateway
serves exactly what the lab trained (`gearshift.lab.gating.train_learned_gate`):

- answer checks (ANSWER_FEATURES): the arithmetic and final-answer gates' findings and simple
  statistics of the answer against the question, standardised with the training mean and spread;
- the question's hashed n-grams and structure (gearshift.learned.features.Featurizer, as the classifier
  router uses them);
- the answer's hashed word 1-2-grams.

The model predicts the probability that escalating would help (`target: gain`, the strong model
right where the cheap one is wrong) or that the cheap answer is wrong (`target: wrong`); the
gate's score is 1 minus that probability, so a high score means "keep the cheap answer" and the
gate passes when score >= threshold, as every gate does.

Config: `{kind: learned, artifact: gate.json, threshold: 0.7}`; the artifact path is relative to
the config file. Without `threshold`, the artifact's suggested threshold (set at training) is used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from gearshift.errors import ConfigError
from gearshift.gates.arithmetic import (
    FinalAnswerGate,
    FinalAnswerOptions,
    final_number,
    number_value,
)
from gearshift.gates.base import Gate, GateOptions
from gearshift.gates.equations import find_equations
from gearshift.request import ChatRequest
from gearshift.trace import Verdict

ARTIFACT_KIND = "learned-gate"

ANSWER_FEATURES: tuple[str, ...] = (
    "equations_hold_share", "any_equation_fails", "log_equations", "log_failed_equations",
    "final_answer_gate", "final_marker", "no_final_number", "final_not_integer", "final_negative",
    "log_final_magnitude", "final_in_question", "log_answer_chars", "log_answer_lines", "log_hedges",
    "question_numbers_used", "log_question_numbers", "log_question_chars", "log_final_statements",
    "calculator_annotations", "log_answer_distinct_numbers", "unclosed_annotation",
    "answer_to_question_length", "log_unused_question_numbers", "log_unexplained_operands",
    "unexplained_operand_share", "non_integer_results_share", "last_equation_is_final",
    "final_to_question_magnitude",
)
# What a high value of each feature means, for verdict reasons.
_DESCRIBE = {
    "any_equation_fails": "an equation does not hold", "log_failed_equations": "failed arithmetic",
    "no_final_number": "no final number", "final_not_integer": "the final number is not whole",
    "final_negative": "the final number is negative", "final_in_question": "the final number only repeats the question",
    "log_hedges": "hedging words", "unclosed_annotation": "the answer was cut off",
    "log_unused_question_numbers": "numbers of the question left unused",
    "log_unexplained_operands": "numbers from nowhere", "unexplained_operand_share": "numbers from nowhere",
    "non_integer_results_share": "fractional intermediate results",
    "log_answer_chars": "a long answer", "log_question_chars": "a long question",
    "log_question_numbers": "many numbers in the question", "log_final_statements": "several final statements",
}

_HEDGE = re.compile(r"\b(?:approximately|about|assum\w*|however|wait|actually|not enough|cannot|can't|impossible|"
                    r"unclear|round\w*|nearest|estimate\w*|possible|seems|likely|maybe|perhaps|but)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_LAST_NUMBER = re.compile(r"-?[$€£]?\s?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:\s?/\s?\d+)?%?")
_FINAL_STATEMENT = re.compile(r"(?i)####|the answer is|final answer")
# Numbers a question states in words, and constants an answer may use without them being stated.
_WORD_NUMBERS = {"half": 0.5, "twice": 2.0, "double": 2.0, "triple": 3.0, "dozen": 12.0, "quarter": 0.25,
                 "third": 3.0, "one": 1.0, "two": 2.0, "three": 3.0, "four": 4.0, "five": 5.0, "six": 6.0,
                 "seven": 7.0, "eight": 8.0, "nine": 9.0, "ten": 10.0, "eleven": 11.0, "twelve": 12.0,
                 "fifteen": 15.0, "twenty": 20.0, "thirty": 30.0, "forty": 40.0, "fifty": 50.0, "hundred": 100.0}
_WORD_NUMBER = re.compile(r"\b(" + "|".join(_WORD_NUMBERS) + r")\b", re.IGNORECASE)
_CONSTANTS = frozenset({0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 10.0, 12.0, 24.0, 30.0, 31.0, 52.0, 60.0, 100.0,
                        365.0, 1000.0, 0.5, 0.25, 0.01})
_WORD = re.compile(r"\w+")
_FINAL_GATE = FinalAnswerGate(FinalAnswerOptions(kind="final_answer"))


def _numbers(text: str) -> list[float]:
    return [float(m.replace(",", "")) for m in _NUMBER.findall(text)]


def answer_features(question: str, answer: str, completion: dict[str, Any] | None = None) -> np.ndarray:
    """The raw (unscaled) answer checks, in the order of ANSWER_FEATURES."""
    a = answer or ""
    eqs = find_equations(a)
    bad = sum(1 for e in eqs if not e.holds)
    final_gate = _FINAL_GATE.check(ChatRequest(body={}), a, completion).score
    marker = final_number(a)
    tail = a.rstrip()
    last_line = _LAST_NUMBER.findall(tail[max(tail.rfind("\n") + 1, len(tail) - 300):])
    found = marker or (last_line[-1] if last_line else None)
    value = number_value(found) if found else None
    q_numbers = _numbers(question)
    q_set = set(q_numbers) | {_WORD_NUMBERS[w.lower()] for w in _WORD_NUMBER.findall(question)}
    a_set = set(_numbers(a))
    stated = set(q_numbers)
    # Operands that are neither in the question, nor an earlier result, nor a common constant.
    known = set(q_set) | _CONSTANTS
    unexplained = operands = non_integer = 0
    for e in eqs:
        for x in _numbers(e.lhs):
            operands += 1
            unexplained += x not in known
        known.update(_numbers(e.rhs))
        if e.value is not None and abs(e.value - round(e.value)) > 1e-9:
            non_integer += 1
    last_is_final = bool(eqs) and value is not None and eqs[-1].value is not None and abs(eqs[-1].value - value) < 1e-6
    q_max = max(q_numbers) if q_numbers else 1.0
    log_len_a, log_len_q = math.log1p(len(a)), math.log1p(len(question))
    return np.array([
        1.0 if not eqs else 1.0 - bad / len(eqs),
        float(bad > 0),
        math.log1p(len(eqs)),
        math.log1p(bad),
        final_gate,
        float(marker is not None),
        float(value is None),
        float(value is not None and abs(value - round(value)) > 1e-9),
        float(value is not None and value < 0),
        math.log1p(abs(value)) if value is not None else 0.0,
        float(value is not None and value in q_set),
        log_len_a,
        math.log1p(a.count("\n")),
        math.log1p(len(_HEDGE.findall(a))),
        len(stated & a_set) / max(1, len(stated)),
        math.log1p(len(q_numbers)),
        log_len_q,
        math.log1p(len(_FINAL_STATEMENT.findall(a))),
        float("<<" in a),
        math.log1p(len(a_set)),
        float(tail.rfind("<<") > tail.rfind(">>")),
        log_len_a - log_len_q,
        math.log1p(len(stated - a_set)),
        math.log1p(unexplained),
        unexplained / max(1, operands),
        non_integer / max(1, len(eqs)),
        float(last_is_final),
        (math.log1p(abs(value)) - math.log1p(abs(q_max))) if value is not None else 0.0,
    ], dtype=np.float64)


def answer_ngrams(answer: str, bits: int, max_chars: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Hashed word 1-2-grams of the answer's tail: sorted bucket indices and L2-normalised log counts."""
    from gearshift.learned.features import word_ngram_indices

    idx = word_ngram_indices(_WORD.findall(answer[-max_chars:].lower()), 1, 2, bits)
    if idx.size == 0:
        return idx, np.zeros(0)
    uniq, cnt = np.unique(idx, return_counts=True)
    v = np.log1p(cnt.astype(np.float64))
    return uniq, v / float(np.sqrt(v @ v))


class LearnedGateModel:
    """A trained learned gate: feature settings, scaling, and the linear model's weights.

    Feature layout: [answer checks (standardised, clipped)] [question Featurizer block, scaled by
    `question_weight`] [answer n-grams (2**answer_bits), scaled by `ngram_weight`].
    `probability` is the model's P(target); the gate's score is 1 - P.
    """

    def __init__(self, weights: np.ndarray, bias: float, mean: np.ndarray, std: np.ndarray,
                 featurizer: Any | None, answer_bits: int, question_weight: float = 1.0, ngram_weight: float = 1.0,
                 target: str = "gain", threshold: float = 0.5, header: dict[str, Any] | None = None) -> None:
        self.featurizer = featurizer
        self.answer_bits = answer_bits
        self.question_weight = question_weight
        self.ngram_weight = ngram_weight
        self.mean = np.asarray(mean, dtype=np.float64)
        self.inv_std = 1.0 / np.asarray(std, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.bias = float(bias)
        self.target = target
        self.threshold = threshold
        self.header = dict(header or {})
        self.n_answer = len(ANSWER_FEATURES)
        self.q_offset = self.n_answer
        self.ngram_offset = self.q_offset + (featurizer.dim if featurizer is not None else 0)
        self.dim = self.ngram_offset + ((1 << answer_bits) if answer_bits else 0)
        if self.weights.shape != (self.dim,):
            raise ValueError(f"learned gate weights have shape {self.weights.shape}, the features need ({self.dim},)")

    # -- features --------------------------------------------------------------------------

    def scaled_checks(self, raw: np.ndarray) -> np.ndarray:
        """Answer checks standardised with the training statistics, clipped so one odd answer cannot dominate."""
        return np.clip((raw - self.mean) * self.inv_std, -5.0, 5.0)

    def row(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None,
            checks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and values of one (question, answer) pair."""
        if checks is None:
            checks = answer_features(request.last_user_text() or request.text(), answer, completion)
        idx = [np.arange(self.n_answer, dtype=np.int64)]
        val = [self.scaled_checks(checks)]
        if self.featurizer is not None:
            i, v = self.featurizer.row(request)
            idx.append(i + self.q_offset)
            val.append(v * self.question_weight)
        if self.answer_bits:
            i, v = answer_ngrams(answer, self.answer_bits)
            idx.append(i + self.ngram_offset)
            val.append(v * self.ngram_weight)
        return np.concatenate(idx), np.concatenate(val)

    def transform(self, requests: Sequence[ChatRequest], answers: Sequence[str],
                  completions: Sequence[dict[str, Any] | None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR triple (data, indices, indptr) of many pairs; shape (len(requests), self.dim)."""
        data, indices = [], []
        indptr = np.zeros(len(requests) + 1, dtype=np.int64)
        for k, (r, a) in enumerate(zip(requests, answers, strict=True)):
            i, v = self.row(r, a or "", completions[k] if completions is not None else None)
            indices.append(i)
            data.append(v)
            indptr[k + 1] = indptr[k] + len(i)
        if not requests:
            return np.zeros(0), np.zeros(0, dtype=np.int64), indptr
        return np.concatenate(data), np.concatenate(indices), indptr

    # -- scoring ---------------------------------------------------------------------------

    def logit(self, idx: np.ndarray, val: np.ndarray) -> float:
        return float(self.weights[idx] @ val) + self.bias

    def probability(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> float:
        """P(target) of one pair: escalation helps (gain) or the answer is wrong (wrong)."""
        idx, val = self.row(request, answer, completion)
        return _sigmoid(self.logit(idx, val))

    def score(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> float:
        """The gate's score: 1 - P(target); high means keep the cheap answer."""
        return 1.0 - self.probability(request, answer, completion)

    def scores(self, requests: Sequence[ChatRequest], answers: Sequence[str]) -> np.ndarray:
        """Scores of many pairs (the lab's batch form of `score`)."""
        data, indices, indptr = self.transform(requests, answers)
        contrib = self.weights[indices] * data
        sums = np.add.reduceat(contrib, indptr[:-1]) if len(data) else np.zeros(len(requests))
        logits = sums + self.bias
        return 1.0 / (1.0 + np.exp(logits))  # 1 - sigmoid(logit)

    def reasons(self, checks: np.ndarray, top: int = 3) -> list[str]:
        """The answer checks that pushed hardest towards escalation, in words."""
        contrib = self.weights[: self.n_answer] * self.scaled_checks(checks)
        out = []
        for j in np.argsort(-contrib)[:top]:
            name = ANSWER_FEATURES[int(j)]
            if contrib[j] > 0.05 and name in _DESCRIBE:
                out.append(_DESCRIBE[name])
        return out

    # -- storage ---------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the model as a gearshift artifact (JSON header + checksummed arrays)."""
        from gearshift.learned import artifact

        header = {
            **self.header, "kind": ARTIFACT_KIND, "target": self.target, "threshold": self.threshold,
            "answer_features": list(ANSWER_FEATURES), "answer_bits": self.answer_bits,
            "question_weight": self.question_weight, "ngram_weight": self.ngram_weight, "bias": self.bias,
            "featurizer": None if self.featurizer is None else {
                "spec": self.featurizer.spec.to_json(), "state": self.featurizer.state_json()},
        }
        # float64: the gateway scores with exactly the weights the lab trained.
        arrays: dict[str, np.ndarray] = {"weights": self.weights, "mean": self.mean, "std": self.std}
        return artifact.save(artifact.Artifact(header=header, arrays=arrays), path)

    @classmethod
    def load(cls, path: str | Path) -> LearnedGateModel:
        """Read a model written by `save`; raises gearshift.learned.artifact.ArtifactError saying why a file is refused."""
        from gearshift.learned import artifact
        from gearshift.learned.features import Featurizer

        art = artifact.load(path, kind=ARTIFACT_KIND)
        h = art.header
        if list(h.get("answer_features", [])) != list(ANSWER_FEATURES):
            raise artifact.ArtifactError(f"{path}: the gate's answer features differ from this gearshift version's; "
                                         "retrain it with gearshift.lab.gating.train_learned_gate")
        fz = h.get("featurizer")
        featurizer = Featurizer.from_json(fz["spec"], fz["state"]) if fz else None
        return cls(weights=art.arrays["weights"], bias=float(h["bias"]), mean=art.arrays["mean"],
                   std=art.arrays["std"], featurizer=featurizer, answer_bits=int(h["answer_bits"]),
                   question_weight=float(h["question_weight"]), ngram_weight=float(h["ngram_weight"]),
                   target=str(h["target"]), threshold=float(h["threshold"]), header=h)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class LearnedOptions(GateOptions):
    artifact: str = Field(description="the trained gate (gearshift.lab.gating.train_learned_gate), "
                                      "relative to the config file")


class LearnedGate(Gate[LearnedOptions]):
    """Passes when 1 - P(escalation helps) >= threshold (default: the artifact's suggested threshold)."""

    kind = "learned"
    Options = LearnedOptions
    default_threshold = 0.5

    def __init__(self, options: LearnedOptions, model: LearnedGateModel | None = None) -> None:
        super().__init__(options)
        self.model = model if model is not None else LearnedGateModel.load(options.artifact)
        if options.threshold is None:
            self.threshold = self.model.threshold

    @classmethod
    def from_options(cls, options: Any, models: dict[str, Any], where: str) -> LearnedGate:
        from gearshift.learned.artifact import ArtifactError

        try:
            return cls(options)
        except (ArtifactError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{where}.artifact: cannot use {options.artifact!r}: {e}") from None

    def check(self, request: ChatRequest, answer: str, completion: dict[str, Any] | None = None) -> Verdict:
        checks = answer_features(request.last_user_text() or request.text(), answer, completion)
        idx, val = self.model.row(request, answer, completion, checks)
        p = _sigmoid(self.model.logit(idx, val))
        what = "escalation helps" if self.model.target == "gain" else "the answer is wrong"
        reasons = [f"P({what}) {p:.2f}"] + self.model.reasons(checks)
        return self.verdict(1.0 - p, reasons)


__all__ = ["ANSWER_FEATURES", "LearnedGate", "LearnedGateModel", "LearnedOptions", "answer_features", "answer_ngrams"]
