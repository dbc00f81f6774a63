"""A real `gearshift serve` process: SIGTERM under load loses no trace; `gearshift traces` sums them; with
--workers, /metrics and /health count every worker's requests whichever worker answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import urllib3
import yaml

from gearshift.gateway.server import free_port
from gearshift.store.sqlite import SQLiteStore
from tests.support.fake_upstream import FakeUpstream
from tests.watch.test_prometheus import parse


def write_config(path: Path, upstream: FakeUpstream) -> None:
    config = {
        "models": {
            "small": {"provider": "openai", "upstream_id": "fake-small", "base_url": upstream.openai_url,
                      "price": {"input": 1.0, "output": 2.0}, "rank": 1, "retries": 0},
            "large": {"provider": "openai", "upstream_id": "fake-large", "base_url": upstream.openai_url,
                      "price": {"input": 10.0, "output": 30.0}, "rank": 9, "retries": 0},
        },
        "routers": {"gearshift/auto": {"kind": "rules", "default": "small",
                                       "rules": [{"when": {"keywords": ["hard"]}, "model": "large"}]}},
        "store": {"url": "sqlite:///traces.db"},
        "server": {"open": True},  # 127.0.0.1 only, and not about authentication
    }
    path.write_text(yaml.safe_dump(config))


def start_server(config: Path, port: int, *options: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "gearshift.cli", "serve", "--config", str(config), "--port", str(port),
                             *options], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    http = urllib3.PoolManager()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if http.request("GET", f"http://127.0.0.1:{port}/health", retries=False).status == 200:
                return proc
        except urllib3.exceptions.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"gateway did not start: {proc.stdout.read().decode() if proc.stdout else ''}")


def test_sigterm_under_load_loses_no_answered_trace(tmp_path: Path) -> None:
    with FakeUpstream.running(models=("fake-small", "fake-large")) as upstream:
        upstream.delay(0.05, times=None)  # keep requests in flight when the signal lands
        cfg = tmp_path / "gw.yaml"
        write_config(cfg, upstream)
        port = free_port()
        proc = start_server(cfg, port)
        answered: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def load() -> None:
            http = urllib3.PoolManager()
            body = json.dumps({"model": "gearshift/auto", "messages": [{"role": "user", "content": "hi"}]})
            for _ in range(400):
                if stop.is_set():
                    return
                try:
                    r = http.request("POST", f"http://127.0.0.1:{port}/v1/chat/completions", body=body,
                                     headers={"Content-Type": "application/json"}, retries=False, timeout=10)
                except urllib3.exceptions.HTTPError:
                    return  # the server has stopped accepting
                if r.status == 200:
                    with lock:
                        answered.append(r.headers["x-gearshift-trace-id"])

        threads = [threading.Thread(target=load) for _ in range(8)]
        for t in threads:
            t.start()
        while len(answered) < 40:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        stop.set()
        for t in threads:
            t.join(30)
    assert proc.returncode == 0, out.decode()
    store = SQLiteStore(tmp_path / "traces.db")
    stored_ids = {r["id"] for r in store.traces() if r["status"] == 200}
    missing = set(answered) - stored_ids
    assert len(answered) >= 40
    assert not missing, f"{len(missing)} answered requests have no trace"


def test_traces_command_summarises_spend_and_savings(tmp_path: Path) -> None:
    with FakeUpstream.running(models=("fake-small", "fake-large")) as upstream:
        cfg = tmp_path / "gw.yaml"
        write_config(cfg, upstream)
        port = free_port()
        proc = start_server(cfg, port)
        http = urllib3.PoolManager()
        for text in ["easy one", "easy two", "a hard one"]:
            body = json.dumps({"model": "gearshift/auto", "messages": [{"role": "user", "content": text}]})
            assert http.request("POST", f"http://127.0.0.1:{port}/v1/chat/completions", body=body,
                                headers={"Content-Type": "application/json"}).status == 200
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "gearshift.cli", "traces", "--config", str(cfg), "--json"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["requests"] == 3 and s["errors"] == 0
    assert s["by_endpoint"] == {"chat": 3}
    assert s["calls_by_model"] == {"small": 2, "large": 1}
    assert s["reference_model"] == "large"
    # Sent to large at large's prices, the two small answers would have cost 10x/15x more.
    assert s["counterfactual_usd_estimate"] > s["spend_usd"] > 0
    assert 0 < s["savings_pct_estimate"] < 100
    text = subprocess.run([sys.executable, "-m", "gearshift.cli", "traces", "--config", str(cfg)],
                          capture_output=True, text=True, env=env)
    assert "estimate" in text.stdout and "small" in text.stdout and "savings" in text.stdout
    assert "by endpoint: chat 3" in text.stdout


def test_workers_report_one_truth(tmp_path: Path) -> None:
    """Two workers on one port: every scrape, whichever worker answers it, counts all 200 requests."""
    close = {"Connection": "close"}  # a new connection each time: the kernel picks the worker anew

    def get(path: str) -> bytes:
        r = http.request("GET", f"http://127.0.0.1:{port}{path}", headers=close, retries=False)
        assert r.status == 200
        return bytes(r.data)

    def requests_total() -> float:
        _, samples = parse(get("/metrics").decode())
        return sum(v for name, _, v in samples if name == "gearshift_requests_total")

    http = urllib3.PoolManager()
    with FakeUpstream.running(models=("fake-small", "fake-large")) as upstream:
        cfg = tmp_path / "gw.yaml"
        write_config(cfg, upstream)
        port = free_port()
        proc = start_server(cfg, port, "--workers", "2")
        try:
            deadline = time.monotonic() + 30
            while json.loads(get("/health"))["workers"] < 2:  # both have published their first counts
                assert time.monotonic() < deadline, "the second worker did not start"
                time.sleep(0.1)
            for i in range(200):
                body = json.dumps({"model": "gearshift/auto", "messages": [{"role": "user", "content": f"q {i}"}]})
                r = http.request("POST", f"http://127.0.0.1:{port}/v1/chat/completions", body=body,
                                 headers={"Content-Type": "application/json", **close}, retries=False)
                assert r.status == 200
            # Each worker publishes its counts every second: wait until both workers have seen the other's last.
            answered: set[int] = set()
            deadline = time.monotonic() + 30
            while len(answered) < 2:
                h = json.loads(get("/health"))
                if h["requests"] == 200 and h["traces_written"] == 200:
                    answered.add(h["pid"])
                assert time.monotonic() < deadline, f"counts did not settle: {h}"
            assert [requests_total() for _ in range(10)] == [200] * 10
            for _ in range(10):
                h = json.loads(get("/health"))
                assert (h["requests"], h["traces_written"], h["workers"]) == (200, 200, 2)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()
