"""Rate limits and budgets held across two gateway replicas on one store (SQLite file, PostgreSQL).

Each replica decides on its last view of the store plus its own counts, exchanged every
`server.limits_sync_seconds` (and sooner when its count moves fast). Synced, two replicas admit
exactly the limit; in a burst shorter than one sync interval, each admits at most the limit on its
own, so the overshoot is at most (replicas - 1) x what one replica admits between syncs. Windows run
on a clock the test drives; `benchmarks/limits.py` measures the overshoot at concurrency 64."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import urllib3

from gearshift.gateway.server import running
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_helpers import gateway_config

http = urllib3.PoolManager(maxsize=32)
BODY = json.dumps({"model": "gearshift/auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
T0 = 1_900_000_020.0  # 40 s before a minute ends
LIMIT = 20


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def ask(gw: Any) -> int:
    return int(http.request("POST", gw.url + "/v1/chat/completions", body=BODY,
                            headers={"Authorization": "Bearer k-app"}).status)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"url": f"sqlite:///{tmp_path / 'shared.db'}", "flush_interval": 0.05}
    return {"url": request.getfixturevalue("pg_url"), "password_env": "GEARSHIFT_TEST_PGPASSWORD",
            "flush_interval": 0.05}


def test_two_replicas_hold_a_rate_limit_and_overshoot_it_by_one_sync_at_most(
        store: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_TEST_UPSTREAM_KEY", "sk-up")
    with FakeUpstream.running(models=("fake-small", "fake-large")) as up:
        # Syncs only when the test says (an hour between background syncs): the worst case, measured.
        cfg = gateway_config(up.url, tmp_path, store=store, server={"limits_sync_seconds": 3600},
                             client_keys=[{"name": "app", "key": "k-app", "limits": {"rpm": LIMIT}}])
        with running(cfg) as a, running(cfg) as b:
            clock = Clock()
            replicas = [a.gateway.limiter, b.gateway.limiter]
            for limiter in replicas:
                limiter.clock = clock

            def sync() -> None:
                for limiter in replicas:
                    limiter.sync()

            # Synced between the two halves: together they admit exactly the limit.
            first = [ask(a) for _ in range(15)]
            sync()
            second = [ask(b) for _ in range(15)]
            assert first.count(200) == 15 and second.count(200) == LIMIT - 15
            # A burst at both within one sync interval: each admits what it last knew was left.
            clock.now += 60
            with ThreadPoolExecutor(16) as pool:
                burst = list(pool.map(ask, [a, b] * 30))
            admitted = burst.count(200)
            overshoot = admitted - LIMIT
            assert burst.count(429) == len(burst) - admitted
            # At most each replica admits the whole limit before it hears of the other (an early sync, when
            # its own count has moved by a tenth of what was left, usually shortens that).
            assert 0 <= overshoot <= (len(replicas) - 1) * LIMIT
            sync()  # after one sync every replica knows the window is spent
            assert [ask(a), ask(b)] == [429, 429]


def test_a_budget_spent_before_a_restart_stays_spent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_TEST_UPSTREAM_KEY", "sk-up")
    with FakeUpstream.running(models=("fake-small", "fake-large")) as up:
        cfg = gateway_config(up.url, tmp_path, client_keys=[{"name": "app", "key": "k-app",
                                                              "limits": {"usd_day": 0.00005}}])
        with running(cfg) as gw:
            statuses = []
            while not statuses or statuses[-1] == 200:
                statuses.append(ask(gw))
                assert len(statuses) < 100
        # The spend went to the store at shutdown; a new process reads it before its first request.
        with running(cfg) as again:
            assert ask(again) == 429
