"""Virtual-key tests' set-up: a config with a key secret, an admin config key and two teams; HTTP helpers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml

SECRET_ENV = "GS_TEST_KEY_SECRET"
ADMIN = "k-admin-config-key"  # the config's admin key (the bootstrap: it creates the first virtual keys)
USER = "k-user-config-key"  # a config key without admin

http = urllib3.PoolManager()


def keyed_data(upstream_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: dict[str, Any] | None = None,
               routers: dict[str, Any] | None = None, **server: Any) -> dict[str, Any]:
    """Models small and large on the fake upstream, routers auto (small) and strong (large), teams search and
    ads, config keys `admin` (admin) and `user`, virtual keys on (the secret set in the environment)."""
    monkeypatch.setenv(SECRET_ENV, "s" * 24 + "-test-secret-" + "x" * 16)
    monkeypatch.setenv("GS_TEST_UPSTREAM_KEY", "sk-upstream")
    model = {"provider": "openai", "base_url": upstream_url + "/v1", "api_key_env": "GS_TEST_UPSTREAM_KEY",
             "retries": 0, "timeout": {"connect": 1, "read": 5}}
    return {
        "models": {"small": {**model, "upstream_id": "fake-small", "price": {"input": 1.0, "output": 2.0}, "rank": 1},
                   "large": {**model, "upstream_id": "fake-large", "price": {"input": 10.0, "output": 30.0},
                             "rank": 9}},
        "routers": routers or {"auto": {"kind": "fixed", "model": "small"},
                               "strong": {"kind": "fixed", "model": "large"}},
        "teams": {"search": {}, "ads": {}},
        "client_keys": [{"name": "admin", "key": ADMIN, "admin": True}, {"name": "user", "key": USER}],
        "store": store or {"url": f"sqlite:///{tmp_path / 'traces.db'}", "flush_interval": 0.05},
        "server": {"key_secret_env": SECRET_ENV, **server},
    }


def write_config(data: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def call(url: str, method: str, path: str, body: Any = None, key: str | None = ADMIN,
         raw: bytes | None = None) -> tuple[int, Any]:
    """(status, JSON body) of one request to the gateway at `url`."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    r = http.request(method, url + path, body=data, headers=headers)
    return r.status, json.loads(r.data) if r.data else None


def ask(url: str, key: str, model: str = "auto", text: str = "hi") -> urllib3.BaseHTTPResponse:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}]})
    return http.request("POST", url + "/v1/chat/completions", body=body, headers={"Authorization": f"Bearer {key}"})


def drained(gw: Any) -> None:
    """Wait until the gateway's shadow queue and trace writer are empty."""
    deadline = time.monotonic() + 20
    g = gw.gateway
    while (g.writer.pending() or (g.shadower is not None and g.shadower.queue.qsize())) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
