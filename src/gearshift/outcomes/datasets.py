"""Recorded benchmark outcomes as Outcomes: RouteLLM (GSM8K, MMLU), RouterBench subsets, files, traces.

`load(spec)` is the one entry point. Specs:

- `routellm/gsm8k`, `routellm/mmlu`: Mixtral-8x7B (weak) vs GPT-4-1106 (strong), 0/1 quality.
- `routerbench/<task>` (arc_challenge, mbpp, winograde): 11 models, train and test splits
  concatenated with meta `split`; `routerbench`: all three tasks (meta `task`).
- anything else: a path to an outcomes file (docs/outcomes-format.md), relative to `base_dir`.

Data is read from `data_dir()`: $GEARSHIFT_DATA, else $XDG_CACHE_HOME/gearshift/datasets, else
~/.cache/gearshift/datasets. `gearshift datasets fetch NAME` downloads the public files there.
"""

from __future__ import annotations

import ast
import csv
import functools
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gearshift.config import Price
from gearshift.outcomes.fetch import DATASETS, fetch
from gearshift.outcomes.files import PriceTable, read_outcomes
from gearshift.outcomes.table import Outcomes
from gearshift.request import CHARS_PER_TOKEN
from gearshift.store.view import PairEstimate, TraceView

ROUTELLM_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ROUTELLM_STRONG = "gpt-4-1106-preview"
ROUTERBENCH_TASKS = ("arc_challenge", "mbpp", "winograde")
ROUTERBENCH_SPLITS = ("train", "test")

# USD per 1M tokens (input, output) published for these models at the time of the RouteLLM runs.
# Used only to *estimate* RouteLLM costs, which the data does not record.
DEFAULT_PRICES: dict[str, Price] = {
    ROUTELLM_STRONG: Price(input=10.0, output=30.0),
    ROUTELLM_WEAK: Price(input=0.6, output=0.6),
}
# MMLU answers are one letter; the files keep no response text.
MMLU_OUTPUT_TOKENS = 1.0

# Outcomes returned by load() are shared within a process; a handful of datasets is plenty.
_CACHE_SIZE = 32


def data_dir() -> Path:
    """Where recorded datasets live: $GEARSHIFT_DATA, else the user cache folder."""
    env = os.environ.get("GEARSHIFT_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "gearshift" / "datasets"


def _root(root: str | Path | None) -> Path:
    return Path(root).expanduser() if root is not None else data_dir()


def _need(path: Path, dataset: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{dataset}: {path} not found; run `gearshift datasets fetch {dataset.split('/')[0]}` "
            f"or set GEARSHIFT_DATA to the folder holding the datasets")
    return path


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    csv.field_size_limit(sys.maxsize)  # RouterBench responses exceed csv's 128 KiB default
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [r for r in reader if r]


def _bool_column(rows: list[list[str]], j: int, path: Path, col: str) -> np.ndarray:
    vals = [r[j] for r in rows]
    out = np.fromiter((v == "True" for v in vals), dtype=float, count=len(vals))
    bad = [i for i, v in enumerate(vals) if v not in ("True", "False")]
    if bad:
        raise ValueError(f"{path.name} row {bad[0] + 1}, column {col!r}: {vals[bad[0]]!r} is not True/False")
    return out


def _tokens(texts: Iterable[str | None]) -> np.ndarray:
    return np.array([len(t or "") / CHARS_PER_TOKEN for t in texts], dtype=float)


def _estimate_cost(models: list[str], input_tokens: np.ndarray, output_tokens: np.ndarray,
                   prices: Mapping[str, Price]) -> np.ndarray:
    """(n, m) USD from estimated tokens: input_tokens (n,), output_tokens (n, m)."""
    cost = np.empty_like(output_tokens)
    for j, m in enumerate(models):
        p = prices[m]
        cost[:, j] = (input_tokens * p.input + output_tokens[:, j] * p.output) / 1e6
    return cost


def contaminated_prompts(benchmark: str, root: str | Path | None = None) -> set[str]:
    """RouteLLM's `eval_prompt`s for `gsm8k` or `mmlu` that overlap its router training data.

    RouteLLM drops a row when its prompt text equals an `eval_prompt` exactly (pandas `isin`),
    and so do we: 12 GSM8K rows and 5 MMLU rows.
    """
    path = _need(_root(root) / "routellm" / benchmark / "contaminated_prompts.jsonl", f"routellm/{benchmark}")
    with path.open(encoding="utf-8") as f:
        return {json.loads(line)["eval_prompt"] for line in f if line.strip()}


def _drop(o: Outcomes, benchmark: str, root: str | Path | None) -> Outcomes:
    bad = contaminated_prompts(benchmark, root)
    keep = np.fromiter((p not in bad for p in o.prompts), dtype=bool, count=len(o))
    out = o.subset(keep)
    out.name = f"{o.name} (decontaminated)"
    return out


def load_gsm8k(root: str | Path | None = None) -> Outcomes:
    """RouteLLM GSM8K: 1,319 prompts, Mixtral vs GPT-4, quality from the stored True/False columns.

    Cost is an estimate (`cost_estimated=True`): tokens = characters / 4 of the prompt (input) and
    of each model's response (output), priced with DEFAULT_PRICES. The stored prompt is only the
    question; RouteLLM also sent 8 worked examples, so the real input cost was higher.
    """
    path = _need(_root(root) / "routellm" / "gsm8k" / "gsm8k_responses.csv", "routellm/gsm8k")
    header, rows = _read_csv(path)
    models = [ROUTELLM_WEAK, ROUTELLM_STRONG]
    for col in ("prompt", *models, *(f"{m}_response" for m in models)):
        if col not in header:
            raise ValueError(f"{path.name}: expected column {col!r}; has {header}")
    jp = header.index("prompt")
    prompts = np.array([r[jp] for r in rows], dtype=object)
    quality = np.stack([_bool_column(rows, header.index(m), path, m) for m in models], axis=1)
    responses = np.empty((len(rows), 2), dtype=object)
    for j, m in enumerate(models):
        k = header.index(f"{m}_response")
        responses[:, j] = [r[k] for r in rows]
    out_tokens = np.stack([_tokens(responses[:, j]) for j in range(2)], axis=1)
    cost = _estimate_cost(models, _tokens(prompts), out_tokens, DEFAULT_PRICES)
    n = len(rows)
    return Outcomes(prompts=prompts, models=models, quality=quality, cost=cost, responses=responses,
                    meta={"task": np.full(n, "gsm8k", dtype=object),
                          "source_id": np.array([str(i) for i in range(n)], dtype=object)},
                    name="routellm/gsm8k", cost_estimated=True)


def mmlu_subjects(root: str | Path | None = None) -> list[str]:
    """The MMLU subjects present in the data folder (57 when complete)."""
    folder = _need(_root(root) / "routellm" / "mmlu", "routellm/mmlu")
    return sorted(p.stem.removeprefix("mmlu_") for p in folder.glob("mmlu_*.csv"))


def load_mmlu(root: str | Path | None = None) -> Outcomes:
    """RouteLLM MMLU: 14,042 prompts over 57 subjects (meta `task` and `subject`), no responses.

    Cost is an estimate (`cost_estimated=True`): prompt characters / 4 input tokens and one output
    token (the answer letter), priced with DEFAULT_PRICES.
    """
    folder = _root(root) / "routellm" / "mmlu"
    subjects = mmlu_subjects(root)
    if not subjects:
        raise FileNotFoundError(f"routellm/mmlu: no mmlu_*.csv in {folder}")
    models = [ROUTELLM_WEAK, ROUTELLM_STRONG]
    prompts: list[str] = []
    subject_col: list[str] = []
    source: list[str] = []
    qual: list[np.ndarray] = []
    for s in subjects:
        path = folder / f"mmlu_{s}.csv"
        header, rows = _read_csv(path)
        if header[:1] != ["prompt"] or any(m not in header for m in models):
            raise ValueError(f"{path.name}: expected columns prompt, {', '.join(models)}; has {header}")
        prompts.extend(r[0] for r in rows)
        subject_col.extend([s] * len(rows))
        source.extend(f"{s}:{i}" for i in range(len(rows)))
        qual.append(np.stack([_bool_column(rows, header.index(m), path, m) for m in models], axis=1))
    parr = np.array(prompts, dtype=object)
    n = len(parr)
    out_tokens = np.full((n, 2), MMLU_OUTPUT_TOKENS)
    cost = _estimate_cost(models, _tokens(parr), out_tokens, DEFAULT_PRICES)
    subj = np.array(subject_col, dtype=object)
    return Outcomes(prompts=parr, models=models, quality=np.concatenate(qual), cost=cost,
                    meta={"task": subj, "subject": subj.copy(), "source_id": np.array(source, dtype=object)},
                    name="routellm/mmlu", cost_estimated=True)


_LIST_TEXT = re.compile(r"^\[.*\]$", re.DOTALL)


def _listed_text(v: str) -> str:
    """RouterBench stores texts as a Python list literal of turns; join the turns with blank lines."""
    if not _LIST_TEXT.match(v):
        return v
    try:
        parts = ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v
    if isinstance(parts, list) and all(isinstance(p, str) for p in parts):
        return "\n\n".join(parts)
    return v


def load_routerbench(task: str | None = None, root: str | Path | None = None) -> Outcomes:
    """RouterBench subsets (as redistributed by RouterDC): 11 models, real per-call cost.

    One task (arc_challenge, mbpp, winograde) or all three (task=None). Train and test files are
    concatenated, train first, with meta `split`; meta `task`; `source_id` = sample_id. Prompts and
    responses are stored as Python list literals of turns and are returned as plain text.
    Missing labels stay NaN: 14 ARC sample_ids appear twice, once as a normal row graded for every
    model but gpt-3.5-turbo-1106, and once with a two-turn prompt graded for gpt-3.5-turbo-1106 only
    (28 incomplete rows). Rows with no label at all would be dropped (there are none).
    """
    tasks = ROUTERBENCH_TASKS if task is None else (task,)
    for t in tasks:
        if t not in ROUTERBENCH_TASKS:
            raise ValueError(f"routerbench task {t!r} unknown; allowed: {', '.join(ROUTERBENCH_TASKS)}")
    parts = [_routerbench_file(t, split, root) for t in tasks for split in ROUTERBENCH_SPLITS]
    models = parts[0].models
    parts = [p if p.models == models else p.select_models(models) for p in parts]
    return Outcomes(
        prompts=np.concatenate([p.prompts for p in parts]),
        models=list(models),
        quality=np.concatenate([p.quality for p in parts]),
        cost=np.concatenate([p.cost for p in parts]),
        responses=np.concatenate([p.responses for p in parts if p.responses is not None]),
        meta={k: np.concatenate([p.meta[k] for p in parts]) for k in parts[0].meta},
        name="routerbench" if task is None else f"routerbench/{task}",
    )


def _routerbench_file(task: str, split: str, root: str | Path | None) -> Outcomes:
    path = _need(_root(root) / "routerbench" / f"{task}_{split}.csv", f"routerbench/{task}")
    header, rows = _read_csv(path)
    fixed = {"", "sample_id", "prompt", "eval_name", "oracle_model_to_route_to"}
    models = [c for c in header if c not in fixed and "|" not in c]
    idx = {c: i for i, c in enumerate(header)}
    for m in models:
        for suffix in ("|model_response", "|total_cost"):
            if m + suffix not in idx:
                raise ValueError(f"{path.name}: model {m!r} has no {m + suffix!r} column")
    n, k = len(rows), len(models)
    quality = np.full((n, k), np.nan)
    cost = np.full((n, k), np.nan)
    responses = np.empty((n, k), dtype=object)
    for i, r in enumerate(rows):
        for j, m in enumerate(models):
            q, c = r[idx[m]], r[idx[m + "|total_cost"]]
            if q != "":
                try:
                    quality[i, j] = float(q)
                except ValueError:
                    raise ValueError(f"{path.name} row {i + 1}, column {m!r}: {q!r} is not a number") from None
            if c != "":
                try:
                    cost[i, j] = float(c)
                except ValueError:
                    raise ValueError(f"{path.name} row {i + 1}, column '{m}|total_cost': {c!r} is not a number") from None
            responses[i, j] = _listed_text(r[idx[m + "|model_response"]]) or None
    keep = ~np.all(np.isnan(quality), axis=1)
    prompts = np.array([_listed_text(r[idx["prompt"]]) for r in rows], dtype=object)
    sid = np.array([r[idx["sample_id"]] for r in rows], dtype=object)
    o = Outcomes(prompts=prompts, models=models, quality=quality, cost=cost, responses=responses,
                 meta={"task": np.full(n, task, dtype=object), "split": np.full(n, split, dtype=object),
                       "source_id": sid},
                 name=f"routerbench/{task}_{split}")
    return o.subset(keep)


def _freeze(o: Outcomes) -> Outcomes:
    """Make a cached instance read-only: it is shared by every caller in the process."""
    for arr in (o.prompts, o.quality, o.cost, o.latency, o.responses, *o.meta.values()):
        if arr is not None:
            arr.flags.writeable = False
    return o


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _load_builtin(spec: str, drop_contaminated: bool, root: str) -> Outcomes:
    if spec == "routellm/gsm8k":
        o = load_gsm8k(root)
    elif spec == "routellm/mmlu":
        o = load_mmlu(root)
    elif spec == "routerbench":
        o = load_routerbench(None, root)
    else:
        o = load_routerbench(spec.split("/", 1)[1], root)
    if drop_contaminated:
        o = _drop(o, spec.split("/", 1)[1], root)
    return _freeze(o)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _load_file(path: str, mtime_ns: int, size: int, prices: tuple[tuple[str, float, float], ...]) -> Outcomes:
    table = {m: (i, o) for m, i, o in prices} or None
    return _freeze(read_outcomes(path, table))


BUILTIN = ("routellm/gsm8k", "routellm/mmlu", "routerbench", *(f"routerbench/{t}" for t in ROUTERBENCH_TASKS))


def is_builtin(spec: str) -> bool:
    """True for the names of recorded benchmark datasets (as opposed to file paths)."""
    return spec in BUILTIN


def load(spec: str, base_dir: str | Path = ".", drop_contaminated: bool = False,
         root: str | Path | None = None, prices: PriceTable | None = None) -> Outcomes:
    """Outcomes of a dataset name or an outcomes file path (relative to base_dir).

    Loaded once per process and shared (the gateway's replay providers load the same dataset for
    each model): the returned arrays are read-only; use `subset`/`select_models` or copy to change.
    drop_contaminated: drop RouteLLM's contaminated prompts (routellm/* only).
    root: the data folder (default `data_dir()`). prices: for outcomes files with token columns.
    """
    if is_builtin(spec):
        if drop_contaminated and not spec.startswith("routellm/"):
            raise ValueError(f"drop_contaminated applies to routellm/* datasets; {spec!r} has no contamination list")
        return _load_builtin(spec, drop_contaminated, str(_root(root).resolve()))
    if spec.startswith(("routellm/", "routerbench/")) and not (Path(base_dir) / spec).exists():
        raise ValueError(f"unknown dataset {spec!r}; known: {', '.join(BUILTIN)} (or a path to an outcomes file)")
    if drop_contaminated:
        raise ValueError("drop_contaminated applies to routellm/* datasets, not to outcomes files")
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    path = path.resolve()
    if not path.is_file():
        raise FileNotFoundError(f"outcomes file not found: {path} (from {spec!r}, base_dir {str(base_dir)!r})")
    st = path.stat()
    key = tuple(sorted((m, *_as_pair(p)) for m, p in (prices or {}).items()))
    return _load_file(str(path), st.st_mtime_ns, st.st_size, key)


def _as_pair(p: Price | tuple[float, float]) -> tuple[float, float]:
    return (p.input, p.output) if isinstance(p, Price) else (float(p[0]), float(p[1]))


def clear_cache() -> None:
    """Forget datasets loaded so far (tests; long-lived processes after a fetch)."""
    _load_builtin.cache_clear()
    _load_file.cache_clear()


# --- GSM8K labels ------------------------------------------------------------------------------

_INT = re.compile(r"\d+")


def gsm8k_answer_value(text: str) -> int | None:
    """The last integer in a text, commas removed: RouteLLM's rule for answers and responses.

    As in RouteLLM's generate_responses.py: `\\d+` after dropping commas, so signs and decimals are
    ignored ("-3.5" reads as 5). None when the text holds no digits.
    """
    found = _INT.findall(text.replace(",", ""))
    return int(found[-1]) if found else None


def rederive_gsm8k_labels(root: str | Path | None = None) -> np.ndarray:
    """Recompute GSM8K correctness from test.jsonl, aligned with load("routellm/gsm8k").

    Returns an (n, 2) bool array (columns: weak, strong): the last integer of each response equals
    the integer after `####` in the reference answer. Matches the stored labels on all 1,319 rows.
    """
    root_p = _root(root)
    o = load_gsm8k(root_p)
    path = _need(root_p / "routellm" / "gsm8k" / "test.jsonl", "routellm/gsm8k")
    answers: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                answers[d["question"]] = d["answer"]
    assert o.responses is not None
    out = np.zeros((len(o), 2), dtype=bool)
    for i, prompt in enumerate(o.prompts):
        if prompt not in answers:
            raise ValueError(f"gsm8k row {i + 1}: prompt is not a question of test.jsonl")
        gold = gsm8k_answer_value(answers[prompt].split("####")[-1])
        for j in range(2):
            pred = gsm8k_answer_value(o.responses[i, j] or "")
            out[i, j] = pred is not None and pred == gold
    return out


# --- traces ------------------------------------------------------------------------------------

def from_traces(rows: Iterable[Mapping[str, Any] | TraceView], min_models: int = 2, name: str = "traces") -> Outcomes:
    """Outcomes from stored traces: one row per prompt answered by at least `min_models` models.

    Each trace is a dict with `prompt` (text) and `calls`: dicts with `model`, `role`, `response`,
    `cost_usd`, `latency_ms` and optionally `quality` (or `score`, or `verdict: {score}`), or a
    trace-level `verdicts` list of {model, score}. Only answering calls count (roles primary,
    escalation, fallback, shadow; not judge/gate calls) and only successful ones (no `error`,
    `status` 200 when given): TraceView.answers. Traces with the same prompt text are merged; several
    answers of one model to one prompt are averaged (quality, cost, latency) and the last response is
    kept. Quality is NaN where no verdict graded an answer. Trace `metadata` becomes meta columns.

    Shadow pairs scored by agreement that disagree count at their resolution when a judge resolved
    them, else at the resolved disagreements' mean grades (PairEstimate.grades), else as a loss: then
    the table's `pair_estimate.lower_bound` says the cheaper models' qualities are lower bounds.
    """
    views = [TraceView.of(t) for t in rows]
    estimate = PairEstimate.of_traces(views)
    by_prompt: dict[str, dict[str, Any]] = {}
    for t in views:
        if not isinstance(t.prompt, str) or not t.prompt:
            continue
        entry = by_prompt.setdefault(t.prompt, {"answers": {}, "meta": {}, "id": t.id})
        entry["meta"].update({str(k): str(v) for k, v in t.metadata.items()})
        imputed: dict[str | None, float] = {}
        for pair in t.pairs:
            g = estimate.grades(pair)
            if g is not None:
                imputed.update({pair.model: g[0], pair.reference: g[1]})
        for call in t.answers:
            acc = entry["answers"].setdefault(call.model, {"q": [], "c": [], "l": [], "r": None})
            acc["q"].append(imputed[call.model] if call.grade is None and call.model in imputed else t.quality(call))
            acc["c"].append(call.cost_usd)
            acc["l"].append(call.latency_ms / 1000.0)
            if call.response is not None:
                acc["r"] = str(call.response)
    kept = [(p, e) for p, e in by_prompt.items() if len(e["answers"]) >= min_models]
    if not kept:
        raise ValueError(f"no prompt in the traces was answered by {min_models} or more models")
    models = sorted({m for _, e in kept for m in e["answers"]})
    n, k = len(kept), len(models)
    col = {m: j for j, m in enumerate(models)}
    quality = np.full((n, k), np.nan)
    cost = np.full((n, k), np.nan)
    latency = np.full((n, k), np.nan)
    responses = np.empty((n, k), dtype=object)
    meta_keys = sorted({key for _, e in kept for key in e["meta"]})
    meta = {key: np.empty(n, dtype=object) for key in meta_keys}
    ids = np.empty(n, dtype=object)
    for i, (_, e) in enumerate(kept):
        for m, acc in e["answers"].items():
            j = col[m]
            qs = [q for q in acc["q"] if q == q]
            quality[i, j] = float(np.mean(qs)) if qs else np.nan
            cost[i, j] = float(np.mean(acc["c"]))
            latency[i, j] = float(np.mean(acc["l"]))
            responses[i, j] = acc["r"]
        for key in meta_keys:
            meta[key][i] = e["meta"].get(key, "")
        ids[i] = "" if e["id"] is None else str(e["id"])
    meta.setdefault("source_id", ids)
    return Outcomes(prompts=np.array([p for p, _ in kept], dtype=object), models=models, quality=quality,
                    cost=cost, latency=latency, responses=responses, meta=meta, name=name,
                    pair_estimate=estimate if estimate.pairs else None)


__all__ = [
    "BUILTIN", "DATASETS", "fetch", "DEFAULT_PRICES", "ROUTELLM_STRONG", "ROUTELLM_WEAK", "ROUTERBENCH_TASKS", "clear_cache",
    "contaminated_prompts", "data_dir", "from_traces", "gsm8k_answer_value", "is_builtin", "load", "load_gsm8k",
    "load_mmlu", "load_routerbench", "mmlu_subjects", "rederive_gsm8k_labels",
]
