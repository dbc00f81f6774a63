"""Log lines: JSON parses line by line and carries the trace id; secrets are masked in either format."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import urllib3
import yaml

from gearshift import logs
from gearshift.gateway.server import free_port
from tests.support.fake_upstream import FakeUpstream

SECRET = "sk-upstream-" + "z" * 24


def _record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError(f"boom with Bearer {SECRET}")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("gearshift.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_json_lines_have_the_fields_a_log_search_needs() -> None:
    token = logs.trace_id.set("t-123")
    try:
        line = logs.JSONFormatter().format(_record("model %s failed", "small", router="auto", status=502))
    finally:
        logs.trace_id.reset(token)
    d = json.loads(line)
    assert d["message"] == "model small failed" and d["level"] == "WARNING" and d["logger"] == "gearshift.test"
    assert d["trace_id"] == "t-123" and d["router"] == "auto" and d["status"] == 502
    assert d["timestamp"].endswith("Z") and "T" in d["timestamp"] and d["pid"] == os.getpid()
    assert "\n" not in line
    # Outside a request there is no trace id, rather than a stale one.
    assert "trace_id" not in json.loads(logs.JSONFormatter().format(_record("idle")))


@pytest.mark.parametrize("formatter", [logs.JSONFormatter(), logs.TextFormatter()], ids=["json", "text"])
def test_keys_in_a_message_or_a_traceback_are_masked(formatter: logging.Formatter) -> None:
    out = formatter.format(_record("upstream said: invalid key %s (Authorization: Bearer %s)", SECRET, SECRET,
                                   exc=True))
    assert SECRET not in out and "z" * 24 not in out
    assert "sk-***" in out and "Bearer ***" in out and "RuntimeError" in out


def test_text_lines_name_the_request_being_handled() -> None:
    token = logs.trace_id.set("t-9")
    try:
        line = logs.TextFormatter().format(_record("model small failed"))
    finally:
        logs.trace_id.reset(token)
    assert line.endswith("model small failed [trace t-9]")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logs.configure("INFO", "xml")


def test_serve_with_json_logs_writes_only_json_lines_and_tags_the_failing_request(tmp_path: Path) -> None:
    with FakeUpstream.running(models=("fake-small", "fake-large"), api_key=SECRET) as upstream:
        config = {
            "models": {
                "small": {"provider": "openai", "upstream_id": "fake-small", "base_url": upstream.openai_url,
                          "api_key_env": "UPSTREAM_KEY", "price": {"input": 1.0, "output": 2.0}, "rank": 1,
                          "retries": 0},
                "large": {"provider": "openai", "upstream_id": "fake-large", "base_url": upstream.openai_url,
                          "api_key_env": "UPSTREAM_KEY", "price": {"input": 10.0, "output": 30.0}, "rank": 9,
                          "retries": 0},
            },
            "routers": {"gearshift/auto": {"kind": "fixed", "model": "small", "fallbacks": ["large"]}},
            "store": {"url": "sqlite:///traces.db"},
            "server": {"open": True, "log_format": "json", "access_log_sample": 1.0},
        }
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(yaml.safe_dump(config))
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "gearshift.cli", "serve", "--config", str(cfg),
                                 "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "UPSTREAM_KEY": SECRET}, cwd=tmp_path)
        try:
            http = urllib3.PoolManager()
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http.request("GET", f"http://127.0.0.1:{port}/health", retries=False).status == 200:
                        break
                except urllib3.exceptions.HTTPError:
                    assert time.monotonic() < deadline, "gateway did not start"
                    time.sleep(0.05)
            upstream.fail(500, times=1, model="fake-small")
            r = http.request("POST", f"http://127.0.0.1:{port}/v1/chat/completions",
                             body=json.dumps({"model": "gearshift/auto", "messages": [{"role": "user", "content": "PROMPT-TEXT"}]}),
                             headers={"Content-Type": "application/json"})
            assert r.status == 200 and r.headers["x-gearshift-model"] == "large"
            trace_id = r.headers["x-gearshift-trace-id"]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
    text = err.decode()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the gateway logged nothing"
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"timestamp", "level", "logger", "message"} <= r.keys() for r in records)
    fallback = [r for r in records if "falling back" in r["message"]]
    assert fallback and fallback[0]["trace_id"] == trace_id and fallback[0]["level"] == "WARNING"
    assert SECRET not in text
    (access,) = [r for r in records if r["logger"] == "gearshift.access" and r["path"] == "/v1/chat/completions"]
    assert access["trace_id"] == trace_id and access["status"] == 200 and access["method"] == "POST"
    assert access["router"] == "gearshift/auto" and access["model"] == "large" and access["endpoint"] == "chat"
    assert "PROMPT-TEXT" not in text  # the prompt is never logged
