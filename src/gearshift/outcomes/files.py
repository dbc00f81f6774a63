"""Outcomes files: one row per prompt, columns per model, as CSV or JSONL.

The format is specified in docs/outcomes-format.md. In short, the columns are `prompt`, optional
metadata (`task`, `split`, `source_id`, `meta.<name>`), and for each model `<model>|quality`
(required), `<model>|cost`, `<model>|input_tokens`, `<model>|output_tokens`, `<model>|latency`,
`<model>|response`, `<model>|logprob`, and a judge gate's recorded verdict on the answer
`<model>|judge`, `<model>|judge_cost`, `<model>|judge_latency`. JSONL files use the same names as keys of one flat object per line.

Every problem is a ValueError naming the file, the row and the column, because outcomes files are
written by hand and by scripts, and "bad value somewhere" costs an afternoon.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gearshift.config import Price
from gearshift.outcomes.table import Outcomes

SEP = "|"
META_COLUMNS = ("task", "split", "source_id")
META_PREFIX = "meta."
FIELDS = ("quality", "cost", "input_tokens", "output_tokens", "latency", "response", "logprob", "judge", "judge_cost",
          "judge_latency")
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

# A price table: model -> Price, or (input, output) USD per 1M tokens.
PriceTable = Mapping[str, "Price | tuple[float, float]"]

_TRUE = {"true", "yes"}
_FALSE = {"false", "no"}


def _price(p: Price | tuple[float, float]) -> Price:
    return p if isinstance(p, Price) else Price(input=float(p[0]), output=float(p[1]))


def file_format(path: str | Path) -> str:
    """'csv' or 'jsonl' from the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unknown outcomes file type {suffix!r}; use .csv or .jsonl")
    return SUFFIXES[suffix]


class _Columns:
    """The header parsed into meta columns and per-model fields, in first-seen model order."""

    def __init__(self, names: Iterable[str], source: str) -> None:
        self.meta: dict[str, str] = {}  # column -> meta key
        self.models: list[str] = []
        self.fields: dict[str, dict[str, str]] = {}  # model -> field -> column
        self.has_prompt = False
        for col in names:
            if col == "prompt":
                self.has_prompt = True
            elif col in META_COLUMNS:
                self.meta[col] = col
            elif col.startswith(META_PREFIX) and len(col) > len(META_PREFIX):
                self.meta[col] = col[len(META_PREFIX):]
            elif SEP in col:
                model, fld = col.rsplit(SEP, 1)
                if not model:
                    raise ValueError(f"{source}: column {col!r} has an empty model name")
                if fld not in FIELDS:
                    raise ValueError(f"{source}: column {col!r}: unknown field {fld!r}; allowed: {', '.join(FIELDS)}")
                if model not in self.fields:
                    self.models.append(model)
                    self.fields[model] = {}
                self.fields[model][fld] = col
            else:
                raise ValueError(
                    f"{source}: column {col!r} is not one of prompt, {', '.join(META_COLUMNS)}, "
                    f"meta.<name> or <model>|<field> (fields: {', '.join(FIELDS)})")
        if not self.has_prompt:
            raise ValueError(f"{source}: no `prompt` column")
        if not self.models:
            raise ValueError(f"{source}: no model columns (expected e.g. `gpt-4o|quality`)")
        for model in self.models:
            if "quality" not in self.fields[model]:
                raise ValueError(f"{source}: model {model!r} has no `{model}|quality` column")


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "")


def _quality(v: Any) -> float | None:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, str):
        low = v.strip().lower()
        if low in _TRUE:
            return 1.0
        if low in _FALSE:
            return 0.0
    x = _number(v)
    if x is None or not 0.0 <= x <= 1.0:
        return None
    return x


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        x = float(v)
    elif isinstance(v, str):
        try:
            x = float(v.strip())
        except ValueError:
            return None
    else:
        return None
    return x if math.isfinite(x) else None


def _nonneg(v: Any) -> float | None:
    x = _number(v)
    return x if x is not None and x >= 0 else None


def _nonpos(v: Any) -> float | None:
    x = _number(v)
    return x if x is not None and x <= 0 else None


_PARSERS = {
    "quality": (_quality, "is not a number in [0,1] or true/false"),
    "cost": (_nonneg, "is not a cost in USD (a number >= 0)"),
    "input_tokens": (_nonneg, "is not a token count (a number >= 0)"),
    "output_tokens": (_nonneg, "is not a token count (a number >= 0)"),
    "latency": (_nonneg, "is not a latency in seconds (a number >= 0)"),
    "logprob": (_nonpos, "is not a mean token logprob (a number <= 0)"),
    "judge": (_quality, "is not a judge score in [0,1] or true/false"),
    "judge_cost": (_nonneg, "is not a cost in USD (a number >= 0)"),
    "judge_latency": (_nonneg, "is not a latency in seconds (a number >= 0)"),
}


def outcomes_from_rows(rows: Iterable[tuple[int, Mapping[str, Any]]], columns: Iterable[str], source: str,
                       prices: PriceTable | None = None, name: str = "outcomes") -> Outcomes:
    """Build Outcomes from (row number, {column: value}) pairs that follow the file format.

    Shared by the CSV and JSONL readers; usable directly for rows that come from elsewhere.
    """
    cols = _Columns(columns, source)
    table = {m: _price(p) for m, p in (prices or {}).items()}
    prompts: list[str] = []
    meta: dict[str, list[str]] = {key: [] for key in cols.meta.values()}
    m = len(cols.models)
    values: dict[str, list[list[float]]] = {f: [] for f in _PARSERS}
    responses: list[list[str | None]] = []
    for rownum, row in rows:
        where = f"{source} row {rownum}"
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or prompt == "":
            raise ValueError(f"{where}, column 'prompt': {prompt!r} is not a non-empty text")
        prompts.append(prompt)
        for col, key in cols.meta.items():
            v = row.get(col)
            meta[key].append("" if v is None else str(v))
        per_field = {f: [math.nan] * m for f in _PARSERS}
        resp: list[str | None] = [None] * m
        for j, model in enumerate(cols.models):
            for fld, col in cols.fields[model].items():
                v = row.get(col)
                if fld == "response":
                    if v is not None and not isinstance(v, str):
                        raise ValueError(f"{where}, column {col!r}: {v!r} is not text")
                    resp[j] = v or None
                    continue
                if _empty(v):
                    continue
                parse, what = _PARSERS[fld]
                x = parse(v)
                if x is None:
                    raise ValueError(f"{where}, column {col!r}: {v!r} {what}")
                per_field[fld][j] = x
            if math.isnan(per_field["cost"][j]) and table:
                tin, tout = per_field["input_tokens"][j], per_field["output_tokens"][j]
                if not (math.isnan(tin) and math.isnan(tout)):
                    if model not in table:
                        raise ValueError(f"{where}, column '{model}|cost': empty, and the price table has "
                                         f"no entry for model {model!r} to price its tokens")
                    price = table[model]
                    per_field["cost"][j] = price.cost(0 if math.isnan(tin) else tin, 0 if math.isnan(tout) else tout)  # type: ignore[arg-type]
        for f in _PARSERS:
            values[f].append(per_field[f])
        responses.append(resp)
    n = len(prompts)
    if n == 0:
        raise ValueError(f"{source}: no rows")
    has_latency = any("latency" in cols.fields[mm] for mm in cols.models)
    has_response = any("response" in cols.fields[mm] for mm in cols.models)
    has_logprob = any("logprob" in cols.fields[mm] for mm in cols.models)

    def column(fld: str) -> np.ndarray | None:
        if not any(fld in cols.fields[mm] for mm in cols.models):
            return None
        return np.array(values[fld], dtype=float).reshape(n, m)

    resp_arr = None
    if has_response:
        resp_arr = np.empty((n, m), dtype=object)
        resp_arr[:] = responses
    return Outcomes(
        prompts=np.array(prompts, dtype=object),
        models=list(cols.models),
        quality=np.array(values["quality"], dtype=float).reshape(n, m),
        cost=np.array(values["cost"], dtype=float).reshape(n, m),
        latency=np.array(values["latency"], dtype=float).reshape(n, m) if has_latency else None,
        responses=resp_arr,
        meta={k: np.array(v, dtype=object) for k, v in meta.items()},
        name=name,
        logprob=np.array(values["logprob"], dtype=float).reshape(n, m) if has_logprob else None,
        judge=column("judge"), judge_cost=column("judge_cost"), judge_latency=column("judge_latency"),
    )


def _csv_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    csv.field_size_limit(sys.maxsize)  # responses can be long
    f = path.open(newline="", encoding="utf-8")
    reader = csv.reader(f)
    try:
        header = next(reader)
    except StopIteration:
        f.close()
        raise ValueError(f"{path.name}: empty file") from None
    if len(set(header)) != len(header):
        dup = sorted({c for c in header if header.count(c) > 1})
        f.close()
        raise ValueError(f"{path.name}: duplicate columns {dup}")

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        with f:
            for i, rec in enumerate(reader, start=1):
                if not rec:
                    continue
                if len(rec) != len(header):
                    raise ValueError(f"{path.name} row {i}: {len(rec)} fields, the header has {len(header)}")
                yield i, dict(zip(header, rec, strict=True))

    return header, rows()


def _jsonl_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    names: dict[str, None] = {}
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path.name} row {i}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path.name} row {i}: expected a JSON object, got {type(obj).__name__}")
            names.update(dict.fromkeys(obj))
            rows.append((i, obj))
    return list(names), rows


def read_outcomes(path: str | Path, prices: PriceTable | None = None) -> Outcomes:
    """Read an outcomes file (.csv or .jsonl).

    prices: model -> Price or (input, output) USD per 1M tokens, used to price
    `<model>|input_tokens`/`output_tokens` where `<model>|cost` is empty.
    Raises ValueError naming the row and column of the first bad value; FileNotFoundError if absent.
    """
    p = Path(path)
    kind = file_format(p)
    if not p.is_file():
        raise FileNotFoundError(f"outcomes file not found: {p}")
    header, rows = _csv_rows(p) if kind == "csv" else _jsonl_rows(p)
    return outcomes_from_rows(rows, header, p.name, prices, name=p.stem)


def _fmt(x: float) -> str:
    if math.isnan(x):
        return ""
    return str(int(x)) if float(x).is_integer() and abs(x) < 2**53 else repr(float(x))


def _header(outcomes: Outcomes) -> list[tuple[str, str, Any]]:
    """(column, kind, key) for every column to write, in the documented order."""
    cols: list[tuple[str, str, Any]] = [("prompt", "prompt", None)]
    for key in outcomes.meta:
        cols.append((key if key in META_COLUMNS else META_PREFIX + key, "meta", key))
    for j, model in enumerate(outcomes.models):
        cols.append((f"{model}{SEP}quality", "quality", j))
        cols.append((f"{model}{SEP}cost", "cost", j))
        if outcomes.latency is not None:
            cols.append((f"{model}{SEP}latency", "latency", j))
        if outcomes.responses is not None:
            cols.append((f"{model}{SEP}response", "response", j))
        if outcomes.logprob is not None:
            cols.append((f"{model}{SEP}logprob", "logprob", j))
        for fld in ("judge", "judge_cost", "judge_latency"):
            if getattr(outcomes, fld) is not None:
                cols.append((f"{model}{SEP}{fld}", fld, j))
    return cols


def _value(outcomes: Outcomes, i: int, kind: str, key: Any) -> Any:
    if kind == "prompt":
        return str(outcomes.prompts[i])
    if kind == "meta":
        return str(outcomes.meta[key][i])
    if kind == "response":
        return outcomes.responses[i, key]  # type: ignore[index]
    arr = {"quality": outcomes.quality, "cost": outcomes.cost, "latency": outcomes.latency,
           "logprob": outcomes.logprob, "judge": outcomes.judge, "judge_cost": outcomes.judge_cost,
           "judge_latency": outcomes.judge_latency}[kind]
    x = float(arr[i, key])  # type: ignore[index]
    return None if math.isnan(x) else x


def write_outcomes(outcomes: Outcomes, path: str | Path) -> None:
    """Write outcomes as .csv or .jsonl (chosen by suffix). Unknown values are empty cells / null.

    Written atomically (a temporary file renamed into place) so readers never see half a file.
    """
    p = Path(path)
    kind = file_format(p)
    cols = _header(outcomes)
    tmp = p.with_name(p.name + ".part")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        if kind == "csv":
            w = csv.writer(f)
            w.writerow([c for c, _, _ in cols])
            for i in range(len(outcomes)):
                row = []
                for _, k, key in cols:
                    v = _value(outcomes, i, k, key)
                    row.append("" if v is None else (_fmt(v) if isinstance(v, float) else v))
                w.writerow(row)
        else:
            for i in range(len(outcomes)):
                obj = {c: _value(outcomes, i, k, key) for c, k, key in cols}
                f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    tmp.replace(p)


__all__ = ["FIELDS", "META_COLUMNS", "PriceTable", "file_format", "outcomes_from_rows", "read_outcomes", "write_outcomes"]
