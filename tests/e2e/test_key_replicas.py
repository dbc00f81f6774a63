"""Two gateway replicas on one store (a SQLite file, a PostgreSQL database): a key made at one works at the
other, and a key revoked at one is refused at the other once its cache interval has passed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gearshift import plan
from gearshift.gateway.server import running
from tests.support.fake_upstream import FakeUpstream
from tests.support.keys import ask, call, keyed_data

TTL = 1.0  # server.key_cache_seconds: the stated revocation interval


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    if request.param == "sqlite":
        return {"url": f"sqlite:///{tmp_path / 'shared.db'}", "flush_interval": 0.05}
    url = request.getfixturevalue("pg_url")
    return {"url": url, "password_env": "GEARSHIFT_TEST_PGPASSWORD", "flush_interval": 0.05}


def test_a_key_revoked_at_one_replica_is_refused_at_the_other_within_the_interval(
        store: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeUpstream.running() as up:
        data = keyed_data(up.url, tmp_path, monkeypatch, store=store, key_cache_seconds=TTL)
        with running(plan.parse(data, base_dir=tmp_path)) as a, running(plan.parse(data, base_dir=tmp_path)) as b:
            status, made = call(a.url, "POST", "/admin/keys", {"name": "app", "team": "ads", "models": ["small"]})
            assert status == 201
            key = made["key"]
            assert ask(b.url, key).status == 200 and ask(a.url, key).status == 200
            assert ask(b.url, key, model="large").status == 403  # its restrictions hold at the other replica too
            assert call(a.url, "DELETE", "/admin/keys/app")[0] == 200
            revoked = time.monotonic()
            assert ask(a.url, key).status in (200, 401)  # within the interval either answer is allowed
            time.sleep(max(0.0, TTL - (time.monotonic() - revoked)) + 0.1)
            assert ask(b.url, key).status == 401 and ask(a.url, key).status == 401
