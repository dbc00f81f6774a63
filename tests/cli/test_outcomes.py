"""How lab commands read `--outcomes`: several tables, prices for token counts, models with no answers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gearshift.cli import main
from gearshift.outcomes import concat
from gearshift.outcomes.table import Outcomes


def write_csv(path: Path, n: int, seed: int, dead: bool = False, tokens: bool = False) -> Path:
    """cheap and big answer n prompts; `dead` adds a model with no answer at all; `tokens` gives
    token counts in place of costs."""
    rng = np.random.default_rng(seed)
    models = ["cheap", "big", *(["dead"] if dead else [])]
    cols = ["prompt"] + [f"{m}|{c}" for m in models
                         for c in (("quality", "input_tokens", "output_tokens") if tokens else ("quality", "cost"))]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for i in range(n):
            row: list[object] = [f"prompt {seed}-{i}: {'sum the numbers' if i % 2 else 'name the capital'}"]
            for m, p, usd in (("cheap", 0.6, 0.001), ("big", 0.85, 0.01), ("dead", 0, 0)):
                if m not in models:
                    continue
                if m == "dead":
                    row += ["", "", ""] if tokens else ["", ""]
                else:
                    row += [int(rng.random() < p)] + ([100, 50] if tokens else [usd])
            w.writerow(row)
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_a_model_without_answers_is_named_and_left_out(tmp_path: Path) -> None:
    f = str(write_csv(tmp_path / "o.csv", 120, 0, dead=True))
    code, out = run("lab", "evaluate", "--outcomes", f, "--n-boot", "20", "--json")
    assert code == 0, out
    assert "'dead' has no quality on any prompt" in out and "left out" in out
    assert json.loads(out[out.index("{"):])["strong"] == "big"
    code, out = run("lab", "train", "--outcomes", f, "--out", str(tmp_path / "r.json"), "--form", "multi")
    assert code == 0, out
    assert json.loads((tmp_path / "r.json").read_text())["models"] == ["cheap", "big"]


@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_naming_a_model_without_answers_is_an_error_that_names_it(tmp_path: Path, command: str) -> None:
    f = str(write_csv(tmp_path / "o.csv", 60, 0, dead=True))
    extra = ["--out", str(tmp_path / "r.json")] if command == "train" else []
    code, out = run("lab", command, "--outcomes", f, "--weak", "dead", "--strong", "big", *extra)
    assert code == 2
    assert "model 'dead' has no quality on any prompt" in out


def test_several_outcomes_are_read_one_after_another(tmp_path: Path) -> None:
    a, b = write_csv(tmp_path / "a.csv", 70, 1), write_csv(tmp_path / "b.csv", 50, 2)
    code, out = run("lab", "train", "--outcomes", str(a), "--outcomes", str(b), "--weak", "cheap",
                    "--strong", "big", "--holdout", "0", "--out", str(tmp_path / "r.json"))
    assert code == 0, out
    assert "trained on 120 prompts of a + b" in out


def test_concat_widens_to_the_union_of_models() -> None:
    one = Outcomes(prompts=np.array(["p"], dtype=object), models=["a"], quality=np.array([[1.0]]),
                   cost=np.array([[0.1]]), meta={"task": np.array(["x"], dtype=object)}, name="one")
    two = Outcomes(prompts=np.array(["q", "r"], dtype=object), models=["b", "a"],
                   quality=np.array([[0.0, 0.5], [1.0, 0.0]]), cost=np.array([[0.2, 0.3], [0.2, 0.3]]), name="two")
    both = concat([one, two])
    assert both.models == ["a", "b"] and both.name == "one + two"
    np.testing.assert_array_equal(both.quality, [[1.0, np.nan], [0.5, 0.0], [0.0, 1.0]])
    assert list(both.meta["task"]) == ["x", "", ""]
    assert both.unanswered() == [] and concat([one]).unanswered() == []


def test_prices_price_token_counts_from_the_command_line(tmp_path: Path) -> None:
    f = str(write_csv(tmp_path / "t.csv", 80, 3, tokens=True))
    code, out = run("lab", "evaluate", "--outcomes", f, "--n-boot", "20", "--json",
                    "--prices", "cheap=1,2", "--prices", "big=10,20")
    assert code == 0, out
    rows = {r["name"]: r for r in json.loads(out[out.index("{"):])["rows"]}
    # 100 input and 50 output tokens: cheap $0.0002, big $0.002 per request.
    assert rows["always cheap"]["cost"]["value"] == pytest.approx(0.0002)
    assert rows["always big"]["cost"]["value"] == pytest.approx(0.002)
    code, out = run("lab", "evaluate", "--outcomes", f, "--prices", "cheap=1")
    assert code == 2 and "MODEL=INPUT,OUTPUT" in out


def test_datasets_split_deals_prompts_into_disjoint_parts_that_train_reads(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "o.csv", 200, 4)
    out = tmp_path / "parts.csv"
    code, text = run("datasets", "split", str(src), "--out", str(out), "--parts", "train=0.5,calibrate=0.3,test=0.2")
    assert code == 0, text
    assert "train 100, calibrate 60, test 40" in text
    from gearshift.outcomes import datasets

    o = datasets.load(str(out))
    parts = {n: set(o.split(n).prompts) for n in ("train", "calibrate", "test")}
    assert sum(len(p) for p in parts.values()) == 200 and not (parts["train"] & parts["calibrate"])
    code, text = run("lab", "train", "--outcomes", str(out), "--split", "train", "--weak", "cheap",
                     "--strong", "big", "--holdout", "0", "--out", str(tmp_path / "r.json"))
    assert code == 0 and "trained on 100 prompts" in text, text


def test_assign_parts_by_a_key_mixes_every_part_alike() -> None:
    from gearshift.outcomes.table import assign_parts

    n = 300
    task = np.array(["a"] * 200 + ["b"] * 100, dtype=object)
    o = Outcomes(prompts=np.array([f"p{i}" for i in range(n)], dtype=object), models=["x", "y"],
                 quality=np.zeros((n, 2)), cost=np.zeros((n, 2)), meta={"task": task})
    split = assign_parts(o, {"train": 0.8, "test": 0.2}, seed=3, by="task").meta["split"]
    assert [(int(((split == p) & (task == t)).sum())) for p in ("train", "test") for t in ("a", "b")] == [160, 80, 40, 20]
    with pytest.raises(KeyError, match="metadata 'subject' is not in"):
        assign_parts(o, {"train": 1.0}, by="subject")
