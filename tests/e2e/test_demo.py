"""The main job: `gearshift demo` on the recorded GSM8K outcomes, through real HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from gearshift.config import load_config
from gearshift.gateway.server import running

REPO = Path(__file__).resolve().parents[2]


def test_demo_prints_spend_savings_and_accuracy(data_dir: Path) -> None:
    env = {**os.environ, "GEARSHIFT_DATA": str(data_dir), "COLUMNS": "160"}
    out = subprocess.run([sys.executable, "-m", "gearshift.cli", "demo", "--limit", "60"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {m.group(1): m.groups() for m in re.finditer(
        r"(gearshift/[\w-]+)\s*│\s*(\d+)\s*│\s*([\d.]+)%\s*│\s*([\d.]+)\s*│\s*([\d.-]+)%", out.stdout)}
    assert set(rows) == {"gearshift/auto", "gearshift/cascade", "gearshift/random", "gearshift/strong",
                         "gearshift/weak", "gearshift/classifier", "gearshift/cascade-learned"}
    assert "training a classifier router and a learned gate on 660 prompts" in out.stdout
    # The classifier's life on the held-out prompts: observe, then proven, then promoted, in that order.
    life = re.findall(r"^  (observe|proven|promoted|demoted) +(.*)$", out.stdout, re.M)
    assert [k for k, _ in life[:3]] == ["observe", "proven", "promoted"], out.stdout
    # Checked at 200 and 300 pairs (each check at a higher confidence, the default signal_confidence): proven at
    # the second.
    assert life[0][1].startswith("requests 1-300: served by gpt-4-1106")
    assert re.match(r"at request 300 \(hour 6\), 300 pairs: proven: threshold [\d.]+, retained >= [\d.]+% at "
                    r"99.17% confidence \(check 2: 95% over every check\)", life[1][1])
    assert "the router serves its own decisions for requests 301-" in life[2][1]
    # The learned routers were trained on the other half and spend less than always-strong.
    for learned in ("gearshift/classifier", "gearshift/cascade-learned"):
        assert float(rows[learned][3]) < float(rows["gearshift/strong"][3])
    strong, weak = rows["gearshift/strong"], rows["gearshift/weak"]
    assert strong[1] == weak[1] == "60"
    # The recorded answers: GPT-4 is more accurate and far dearer than Mixtral on these prompts.
    assert float(strong[2]) > float(weak[2])
    assert float(strong[3]) > 10 * float(weak[3])
    assert float(strong[4]) == 0.0 and float(weak[4]) > 90
    assert f"{60 * len(rows)} traces stored" in out.stdout


def test_unknown_prompt_to_replay_model_is_a_clear_error(data_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEARSHIFT_DATA", str(data_dir))
    config = load_config(REPO / "examples" / "replay-gsm8k.yaml")
    config = config.model_copy(update={"store": config.store.model_copy(update={"url": f"sqlite:///{tmp_path}/t.db"})})
    with running(config) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model="gearshift/weak",
                                           messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert "not recorded" in info.value.message and "capital of France" in info.value.message
        assert info.value.code == "prompt_not_recorded"


def test_demo_without_the_data_or_a_way_to_download_it_says_how_to_fix_it(tmp_path: Path) -> None:
    # No datasets in GEARSHIFT_DATA, and every download goes to a proxy on a closed port: a fault, not a mock.
    env = {**os.environ, "GEARSHIFT_DATA": str(tmp_path / "empty"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    out = subprocess.run([sys.executable, "-m", "gearshift.cli", "demo", "--limit", "5"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "cannot download" in out.stderr and "fix: set GEARSHIFT_DATA" in out.stderr
