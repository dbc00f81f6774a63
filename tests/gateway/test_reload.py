"""Live config: SIGHUP (or a changed file) swaps a valid config in whole under load, and keeps the old
one, with check-config's own words in the log, when the new one is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml

from gearshift import plan
from gearshift.gateway.server import free_port, running
from tests.support.fake_upstream import FakeUpstream

CONCURRENCY = 20


def _config(upstream: FakeUpstream, serve: str, **server: Any) -> dict[str, Any]:
    model = {"provider": "openai", "base_url": upstream.openai_url, "retries": 0}
    return {
        "models": {"small": {**model, "upstream_id": "fake-small", "price": {"input": 1, "output": 2}, "rank": 1},
                   "large": {**model, "upstream_id": "fake-large", "price": {"input": 10, "output": 30}, "rank": 9}},
        "routers": {"gearshift/auto": {"kind": "fixed", "model": serve}},
        "store": {"url": "sqlite:///traces.db", "flush_interval": 0.05},
        "server": {"open": True, **server},
    }


# A router naming a model the config does not have: check-config refuses it.
def _broken(upstream: FakeUpstream) -> dict[str, Any]:
    return _config(upstream, "no-such-model")


def _until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


class Load:
    """CONCURRENCY clients sending requests back to back; every answer's status and model, in order, and
    when its request was sent."""

    def __init__(self, url: str) -> None:
        self.url, self.stop, self.results = url, threading.Event(), []  # type: ignore[var-annotated]
        self.lock = threading.Lock()
        self.sent: list[float] = []  # monotonic time each answered request was sent, beside `results`
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CONCURRENCY)]

    def _client(self) -> None:
        http = urllib3.PoolManager()
        body = json.dumps({"model": "gearshift/auto", "messages": [{"role": "user", "content": "hi"}]})
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                r = http.request("POST", self.url + "/v1/chat/completions", body=body, retries=False,
                                 headers={"Content-Type": "application/json"})
                result = (r.status, r.headers.get("x-gearshift-model"))
            except urllib3.exceptions.HTTPError as e:
                result = (0, type(e).__name__)
            with self.lock:
                self.results.append(result)
                self.sent.append(sent)

    def models_since(self, n: int) -> set[str | None]:
        with self.lock:
            return {m for _, m in self.results[n:]}

    def models_sent_after(self, t: float) -> set[str | None]:
        """The models that answered the requests sent at or after `t` (a slow request sent before may end later)."""
        with self.lock:
            return {m for (_, m), s in zip(self.results, self.sent, strict=True) if s >= t}

    def __len__(self) -> int:
        with self.lock:
            return len(self.results)


def _metric(url: str, name: str) -> float:
    text = urllib3.request("GET", url + "/metrics").data.decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_under_load_swaps_a_valid_config_and_keeps_the_old_on_error(tmp_path: Path, workers: int) -> None:
    with FakeUpstream.running(models=("fake-small", "fake-large")) as upstream:
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(yaml.safe_dump(_config(upstream, "small")))
        port = free_port()
        log_path = tmp_path / "serve.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "gearshift.cli", "serve", "--config", str(cfg),
                                     "--port", str(port), "--workers", str(workers)],
                                    stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp_path)
        url = f"http://127.0.0.1:{port}"
        load = Load(url)
        try:
            _until(lambda: _ready(url, workers))
            for t in load.threads:
                t.start()
            _until(lambda: len(load) >= 100)
            assert load.models_since(0) == {"small"}

            cfg.write_text(yaml.safe_dump(_config(upstream, "large")))  # valid: serve the large model
            proc.send_signal(signal.SIGHUP)
            _until(lambda: _reloaded_workers(log_path) == workers)
            swapped, mark = time.monotonic(), len(load)
            _until(lambda: len(load) >= mark + 200)
            # Requests sent before every worker had swapped may finish on the old plan, however late they end.
            assert load.models_sent_after(swapped) == {"large"}  # every worker took the new plan

            cfg.write_text(yaml.safe_dump(_broken(upstream)))  # refused: the old plan keeps serving
            proc.send_signal(signal.SIGHUP)
            _until(lambda: log_path.read_text().count("config reload failed") == workers)
            mark = len(load)
            _until(lambda: len(load) >= mark + 200)
            assert load.models_since(mark) == {"large"}  # the refused config changed nothing
            # Every worker reloaded, and refused, once: any worker's /metrics counts them all.
            _until(lambda: _metric(url, "gearshift_config_reloads_total") == workers
                   and _metric(url, "gearshift_config_reload_failures_total") == workers)
        finally:
            load.stop.set()  # also when an assertion failed: the clients must not outlive the test
            for t in load.threads:
                if t.is_alive():
                    t.join(30)
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    statuses = {s for s, _ in load.results}
    assert statuses == {200}, f"failed requests during reloads: {[r for r in load.results if r[0] != 200][:5]}"
    # The log says why, in the words `check-config` uses for the same file.
    check = subprocess.run([sys.executable, "-m", "gearshift.cli", "check-config", str(cfg)], capture_output=True,
                           text=True, cwd=tmp_path, env={**os.environ})
    assert check.returncode == 2 and check.stderr.strip()
    log_text = log_path.read_text()
    for line in check.stderr.strip().splitlines():
        assert line in log_text


def _ready(url: str, workers: int) -> bool:
    """Ready, with every worker started (each publishes its counts once serving: /health counts them)."""
    try:
        if urllib3.request("GET", url + "/health/ready", retries=False).status != 200:
            return False
        return int(json.loads(urllib3.request("GET", url + "/health", retries=False).data)["workers"]) == workers
    except (urllib3.exceptions.HTTPError, ValueError, KeyError):
        return False


def _reloaded_workers(log_path: Path) -> int:
    return log_path.read_text().count("config reloaded from")


def test_a_changed_file_is_reloaded_when_watched_and_restart_only_keys_are_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with FakeUpstream.running(models=("fake-small", "fake-large")) as upstream:
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(yaml.safe_dump(_config(upstream, "small", watch_config_seconds=0.1)))
        with running(plan.load(cfg)) as gw:
            assert gw.gateway.routers["gearshift/auto"].models() == ["small"]
            changed = _config(upstream, "large", watch_config_seconds=0.1, max_body_bytes=1024)
            cfg.write_text(yaml.safe_dump(changed))
            _until(lambda: gw.gateway.routers["gearshift/auto"].models() == ["large"])
            r = urllib3.request("POST", gw.url + "/v1/chat/completions",
                                body=json.dumps({"model": "gearshift/auto", "messages": [{"role": "user", "content": "x"}]}),
                                headers={"Content-Type": "application/json"})
            assert r.status == 200 and r.headers["x-gearshift-model"] == "large"
            health = json.loads(urllib3.request("GET", gw.url + "/health").data)
            assert health["config"]["reloads"] == 1 and health["config"]["failed_reloads"] == 0
    assert "server.max_body_bytes changed; it takes effect at the next restart" in caplog.text
