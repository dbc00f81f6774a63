"""Dataset loaders on the real recorded data, the outcomes file format, traces, and the downloader
(against a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gearshift.outcomes import datasets
from gearshift.outcomes.datasets import (
    ROUTELLM_STRONG,
    ROUTELLM_WEAK,
    from_traces,
    load,
    rederive_gsm8k_labels,
)
from gearshift.outcomes.fetch import ChecksumError, FetchError, fetch, files, sha256_of, status
from gearshift.outcomes.files import read_outcomes, write_outcomes
from gearshift.outcomes.table import Outcomes
from tests.support.pairs import gsm8k_pair_traces

# --- RouteLLM -------------------------------------------------------------------------------------


def test_gsm8k_loads_with_labels_responses_and_estimated_costs(data_dir: Path) -> None:
    o = load("routellm/gsm8k")
    assert len(o) == 1319
    assert o.models == [ROUTELLM_WEAK, ROUTELLM_STRONG]
    acc = o.quality.mean(axis=0)
    assert acc[0] == pytest.approx(0.638, abs=5e-4) and acc[1] == pytest.approx(0.857, abs=5e-4)  # README
    assert o.cost_estimated and np.all(o.cost > 0)
    assert np.all(o.cost[:, 1] > o.cost[:, 0])  # GPT-4 prices dominate Mixtral's
    assert o.responses is not None and o.responses[0, 1].startswith("Janet")
    assert o.meta["source_id"][5] == "5" and set(o.meta["task"]) == {"gsm8k"}
    assert o.metadata_of(0) == {"task": "gsm8k"}  # split and source_id are not request metadata


def test_gsm8k_cost_estimate_by_hand(data_dir: Path) -> None:
    o = load("routellm/gsm8k")
    p, r = o.prompts[0], o.responses[0, 1]
    want = (len(p) / 4 * 10 + len(r) / 4 * 30) / 1e6  # chars/4 tokens at $10 in / $30 out per 1M
    assert o.cost[0, 1] == pytest.approx(want)


def test_gsm8k_labels_rederived_from_test_jsonl_agree_with_the_stored_ones(data_dir: Path) -> None:
    o = load("routellm/gsm8k")
    derived = rederive_gsm8k_labels()
    agreement = (derived == o.quality.astype(bool)).mean(axis=0)
    assert agreement.tolist() == [1.0, 1.0]  # 1,319 / 1,319 for both models
    assert datasets.gsm8k_answer_value("so 1,234 apples") == 1234
    assert datasets.gsm8k_answer_value("no digits") is None


def test_mmlu_loads_57_subjects_fast_and_with_estimated_costs(data_dir: Path) -> None:
    datasets.clear_cache()
    o = load("routellm/mmlu")
    assert len(o) == 14042
    assert len(set(o.meta["subject"])) == 57
    assert np.array_equal(o.meta["task"], o.meta["subject"])
    acc = o.quality.mean(axis=0)
    assert acc[0] == pytest.approx(0.681, abs=5e-4) and acc[1] == pytest.approx(0.806, abs=5e-4)
    assert o.responses is None and o.cost_estimated
    i = 0
    assert o.cost[i, 0] == pytest.approx((len(o.prompts[i]) / 4 * 0.6 + 1 * 0.6) / 1e6)


def test_contaminated_prompts_are_dropped_by_exact_text_match(data_dir: Path) -> None:
    # RouteLLM's benchmarks.py drops rows whose prompt `isin` the eval_prompt column.
    assert len(load("routellm/gsm8k")) - len(load("routellm/gsm8k", drop_contaminated=True)) == 12
    assert len(load("routellm/mmlu")) - len(load("routellm/mmlu", drop_contaminated=True)) == 5
    bad = datasets.contaminated_prompts("gsm8k")
    clean = load("routellm/gsm8k", drop_contaminated=True)
    assert not set(clean.prompts) & bad
    with pytest.raises(ValueError, match="routellm"):
        load("routerbench", drop_contaminated=True)


def test_loads_are_cached_and_read_only(data_dir: Path) -> None:
    a = load("routellm/gsm8k")
    assert load("routellm/gsm8k") is a
    with pytest.raises(ValueError, match="read-only"):
        a.quality[0, 0] = 0.5
    sub = a.subset(np.arange(3))
    sub.quality[0, 0] = 0.5  # subsets are the caller's own copies


# --- RouterBench ----------------------------------------------------------------------------------


def test_routerbench_tasks_splits_costs_and_text(data_dir: Path) -> None:
    o = load("routerbench")
    assert len(o.models) == 11 and "gpt-4-1106-preview" in o.models
    counts = {(t, s): int(((o.meta["task"] == t) & (o.meta["split"] == s)).sum())
              for t in datasets.ROUTERBENCH_TASKS for s in ("train", "test")}
    assert counts == {("arc_challenge", "train"): 1039, ("arc_challenge", "test"): 445, ("mbpp", "train"): 299,
                      ("mbpp", "test"): 128, ("winograde", "train"): 887, ("winograde", "test"): 380}
    assert not np.isnan(o.cost).any() and (o.cost > 0).all()
    # Prompts and responses are plain text, not Python list literals.
    assert not o.prompts[0].startswith("['") and o.responses is not None
    assert set(np.unique(o.quality[~np.isnan(o.quality)])) <= {0.0, 1.0}
    # 14 ARC sample_ids come twice: a two-turn row graded for gpt-3.5 only, a normal row for all but it.
    incomplete = np.isnan(o.quality)
    assert int(incomplete.any(axis=1).sum()) == 28
    assert sorted(np.unique(incomplete.sum(axis=1)).tolist()) == [0, 1, 10]
    assert set(o.meta["task"][incomplete.any(axis=1)]) == {"arc_challenge"}
    mbpp = load("routerbench/mbpp")
    assert len(mbpp) == 427 and set(mbpp.meta["split"]) == {"train", "test"}
    assert len(mbpp.split("test")) == 128
    assert mbpp.meta["source_id"][mbpp.meta["split"] == "test"][0] == "mbpp.dev.1"


def test_unknown_specs_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        load("routerbench/hellaswag")
    with pytest.raises(FileNotFoundError, match="outcomes file not found"):
        load("nope.csv", base_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="gearshift datasets fetch"):
        datasets.load_gsm8k(tmp_path)


# --- outcomes files ---------------------------------------------------------------------------------


def small() -> Outcomes:
    return Outcomes(prompts=np.array(["What is 2+2?", "Say \"hi\",\nplease"], dtype=object), models=["a|b", "big"],
                    quality=np.array([[1.0, 0.25], [np.nan, 1.0]]), cost=np.array([[0.001, 0.0125], [np.nan, 1e-7]]),
                    latency=np.array([[0.5, 1.25], [np.nan, 2.0]]),
                    responses=np.array([["4", "four"], [None, "hi"]], dtype=object),
                    meta={"task": np.array(["math", "chat"], dtype=object), "tier": np.array(["free", "pro"], dtype=object)})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_outcomes_files_round_trip(tmp_path: Path, suffix: str) -> None:
    o = small()
    path = tmp_path / f"out{suffix}"
    write_outcomes(o, path)
    back = read_outcomes(path)
    assert back.models == o.models  # a model name may contain "|": the field is after the last one
    assert list(back.prompts) == list(o.prompts)
    np.testing.assert_array_equal(back.quality, o.quality)
    np.testing.assert_array_equal(back.cost, o.cost)
    np.testing.assert_array_equal(back.latency, o.latency)
    assert back.responses.tolist() == o.responses.tolist()
    assert back.meta["tier"].tolist() == ["free", "pro"] and back.meta["task"].tolist() == ["math", "chat"]
    assert load(path.name, base_dir=tmp_path).models == o.models


def test_outcomes_file_accepts_booleans_and_prices_tokens(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text("prompt,split,m1|quality,m1|input_tokens,m1|output_tokens,m2|quality,m2|cost\n"
                    "hello,train,true,1000,500,0.5,0.02\n"
                    "bye,test,False,2000,0,1,\n", encoding="utf-8")
    o = read_outcomes(path, prices={"m1": (1.0, 4.0)})
    np.testing.assert_array_equal(o.quality, [[1, 0.5], [0, 1]])
    assert o.cost[0, 0] == pytest.approx((1000 * 1 + 500 * 4) / 1e6)
    assert o.cost[1, 0] == pytest.approx(2000 / 1e6)
    assert np.isnan(o.cost[1, 1])  # no cost and no tokens: unknown
    assert o.split("train").prompts.tolist() == ["hello"]
    with pytest.raises(ValueError, match=r"row 1, column 'm1\|cost'.*no entry for model 'm1'"):
        read_outcomes(path, prices={"m2": (1.0, 1.0)})


@pytest.mark.parametrize(("body", "message"), [
    ("prompt,gpt-4|quality\na,1\nb,0\n" + "c,1\n" * 14 + "d,maybe\n",
     "outcomes.csv row 17, column 'gpt-4|quality': 'maybe' is not a number in [0,1] or true/false"),
    ("prompt,m|quality\na,1.5\n", "outcomes.csv row 1, column 'm|quality': '1.5' is not a number in [0,1]"),
    ("prompt,m|quality,m|cost\na,1,-2\n", "outcomes.csv row 1, column 'm|cost': '-2' is not a cost in USD"),
    ("prompt,m|quality,m|colour\na,1,red\n", "column 'm|colour': unknown field 'colour'"),
    ("prompt,m|cost\na,1\n", "model 'm' has no `m|quality` column"),
    ("prompt,model\na,1\n", "column 'model' is not one of prompt"),
    ("question,m|quality\na,1\n", "column 'question' is not one of prompt"),
    ("m|quality\n1\n", "no `prompt` column"),
    ("prompt,m|quality\n,1\n", "outcomes.csv row 1, column 'prompt'"),
    ("prompt,m|quality\na,1,2\n", "outcomes.csv row 1: 3 fields, the header has 2"),
])
def test_malformed_outcomes_files_name_row_and_column(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "outcomes.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ValueError) as err:
        read_outcomes(path)
    assert message in str(err.value)


def test_malformed_jsonl_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    path.write_text('{"prompt": "a", "m|quality": true}\n{"prompt": "b", "m|quality": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"o.jsonl row 2, column 'm\|quality': 'x' is not a number"):
        read_outcomes(path)
    path.write_text('{"prompt": "a", "m|quality": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match="o.jsonl row 2: not valid JSON"):
        read_outcomes(path)
    with pytest.raises(ValueError, match="use .csv or .jsonl"):
        read_outcomes(tmp_path / "o.xlsx")


# --- traces ------------------------------------------------------------------------------------------


def test_outcomes_from_traces() -> None:
    traces = [
        {"id": "t1", "prompt": "Q1", "metadata": {"tier": "free"}, "calls": [
            {"model": "small", "role": "primary", "response": "a1", "cost_usd": 0.001, "latency_ms": 200, "quality": 0.0},
            {"model": "judge", "role": "judge", "response": "{score: 0}", "cost_usd": 0.01, "latency_ms": 900},
            {"model": "large", "role": "escalation", "response": "b1", "cost_usd": 0.02, "latency_ms": 1500,
             "verdict": {"score": 1.0}},
        ]},
        {"id": "t2", "prompt": "Q2", "calls": [  # only one model answered: not a comparison
            {"model": "small", "role": "primary", "response": "a2", "cost_usd": 0.001, "latency_ms": 100}]},
        {"id": "t3", "prompt": "Q3", "verdicts": [{"model": "large", "score": 0.5}], "calls": [
            {"model": "small", "role": "primary", "response": "a3", "cost_usd": 0.002, "latency_ms": 300},
            {"model": "large", "role": "shadow", "response": "b3", "cost_usd": 0.03, "latency_ms": 2000},
            {"model": "large", "role": "shadow", "error": "timeout", "status": 504, "cost_usd": 0.0},
        ]},
        {"id": "t4", "prompt": "Q3", "calls": [  # same prompt again: merged, answers averaged
            {"model": "small", "role": "primary", "response": "a3b", "cost_usd": 0.004, "latency_ms": 500, "quality": 1}]},
    ]
    o = from_traces(traces)
    assert o.models == ["large", "small"]  # judge calls are not answers
    assert o.prompts.tolist() == ["Q1", "Q3"]
    np.testing.assert_allclose(o.quality[0], [1.0, 0.0])
    np.testing.assert_allclose(o.quality[1], [0.5, 1.0])  # small: one ungraded answer (NaN) and one 1
    np.testing.assert_allclose(o.cost[1], [0.03, 0.003])
    np.testing.assert_allclose(o.latency[0], [1.5, 0.2])
    assert o.responses.tolist() == [["b1", "a1"], ["b3", "a3b"]]
    assert o.meta["tier"].tolist() == ["free", ""] and o.meta["source_id"].tolist() == ["t1", "t3"]
    with pytest.raises(ValueError, match="2 or more models"):
        from_traces(traces[1:2])


# --- downloader ----------------------------------------------------------------------------------------


class _Mirror(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; honours `Range: bytes=N-` so resumed downloads can be tested."""

    log: list[tuple[str, str | None]] = []

    def log_message(self, *args: object) -> None:
        pass

    def send_head(self):  # type: ignore[no-untyped-def]
        self.log.append((self.path, self.headers.get("Range")))
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if rng and path.is_file():
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            data = path.read_bytes()
            self.send_response(206)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            import io

            return io.BytesIO(data[start:])
        return super().send_head()


@pytest.fixture()
def mirror(tmp_path: Path, data_dir: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "mirror"
    for e in files("routellm/gsm8k"):
        (root / e.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data_dir / e.path, root / e.path)
    _Mirror.log = []
    handler = lambda *a, **k: _Mirror(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_downloads_and_verifies_then_skips(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = mirror
    dest = tmp_path / "cache"
    paths = fetch("routellm/gsm8k", dest=dest, base_url=url)
    assert sorted(p.relative_to(dest).as_posix() for p in paths) == sorted(e.path for e in files("routellm/gsm8k"))
    for e in files("routellm/gsm8k"):
        assert sha256_of(dest / e.path) == e.sha256
    assert all(s == "ok" for _, s in status("routellm/gsm8k", dest))
    assert len(datasets.load_gsm8k(dest)) == 1319  # the fetched copy loads
    n = len(_Mirror.log)
    fetch("routellm/gsm8k", dest=dest, base_url=url)
    assert len(_Mirror.log) == n  # everything verified locally: no request made


def test_fetch_refuses_a_corrupted_file(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, root = mirror
    bad = root / "routellm/gsm8k/test.jsonl"
    data = bytearray(bad.read_bytes())
    data[100] ^= 1
    bad.write_bytes(bytes(data))
    dest = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="routellm/gsm8k/test.jsonl"):
        fetch("routellm/gsm8k", dest=dest, base_url=url)
    assert not (dest / "routellm/gsm8k/test.jsonl").exists()
    assert not (dest / "routellm/gsm8k/test.jsonl.part").exists()


def test_fetch_resumes_a_partial_download(mirror: tuple[str, Path], tmp_path: Path, data_dir: Path) -> None:
    url, _ = mirror
    dest = tmp_path / "cache"
    rel = "routellm/gsm8k/gsm8k_responses.csv"
    full = (data_dir / rel).read_bytes()
    part = dest / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(full[: len(full) // 2])
    fetch("routellm/gsm8k", dest=dest, base_url=url)
    assert (dest / rel).read_bytes() == full and not part.exists()
    assert (f"/{rel}", f"bytes={len(full) // 2}-") in _Mirror.log


def test_fetch_errors_name_the_file(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, root = mirror
    (root / "routellm/LICENSE").unlink()
    with pytest.raises(FetchError, match=r"routellm/LICENSE: HTTP 404"):
        fetch("routellm/gsm8k", dest=tmp_path / "c", base_url=url)
    with pytest.raises(ValueError, match="unknown dataset"):
        files("nope")


def test_datasets_cli(mirror: tuple[str, Path], tmp_path: Path, data_dir: Path) -> None:
    from gearshift.cli import main

    url, _ = mirror
    runner = CliRunner()
    dest = tmp_path / "cli-cache"
    res = runner.invoke(main, ["datasets", "fetch", "routellm/gsm8k", "--base-url", url, "--dest", str(dest)])
    assert res.exit_code == 0, res.output
    assert "4 files verified" in res.output
    res = runner.invoke(main, ["datasets", "path"], env={"GEARSHIFT_DATA": str(dest)})
    assert res.output.strip() == str(dest)
    res = runner.invoke(main, ["datasets", "list"], env={"GEARSHIFT_DATA": str(dest), "COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert "routellm/gsm8k" in res.output and "58 missing" in res.output  # mmlu: only LICENSE fetched
    res = runner.invoke(main, ["datasets", "fetch", "nope"])
    assert res.exit_code != 0 and "unknown dataset" in res.output


# --- disagreement is not loss, on GSM8K -------------------------------------------------------------

def test_agreement_understates_mixtral_and_resolution_recovers_it() -> None:
    from gearshift.watch import compute_stats

    rows, ratio = gsm8k_pair_traces(resolve_rate=0.0)
    assert ratio == pytest.approx(0.745, abs=1e-3)  # 63.8% / 85.7% recorded accuracy
    lower = from_traces(rows).pair_estimate
    assert lower is not None and lower.lower_bound
    assert lower.retained == pytest.approx(0.601, abs=1e-3)  # 40% of the pairs disagree, each counted a loss
    rows, _ = gsm8k_pair_traces(resolve_rate=0.2)
    o = from_traces(rows)
    est = o.pair_estimate
    assert est is not None and not est.lower_bound and 0.15 < est.resolved / est.disagreed < 0.25
    assert abs(est.retained - ratio) < 0.03  # close to the recorded ratio (agreements where both erred count 1)
    # The outcomes recalibration and proofs read carry the same estimate, pair by pair.
    q = np.nanmean(o.select_models(["weak", "strong"]).quality, axis=0)
    assert q[0] / q[1] == pytest.approx(est.retained)
    # And the watch (everything served by Mixtral: strong share 0) reports it, with no lower-bound note.
    stats = compute_stats(rows, reference="strong")
    assert stats.quality_retained()[0] == pytest.approx(est.retained)  # type: ignore[index]
    assert not stats.quality_lower_bound
