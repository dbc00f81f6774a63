"""Virtual keys through a real gateway: created by an admin, used, restricted, revoked, expired; never stored
or logged; the admin API's auth and its refusals; the lookup by HMAC through an index, and its cache."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from gearshift import plan
from gearshift.gateway.keys import KeyRing
from gearshift.gateway.server import running
from gearshift.principal import key_hash
from gearshift.store.sql import KEY_BY_HASH
from gearshift.store.sqlite import SQLiteStore
from tests.support.fake_upstream import FakeUpstream
from tests.support.keys import ADMIN, SECRET_ENV, USER, ask, call, drained, keyed_data


def test_a_key_is_created_used_restricted_and_revoked_and_is_never_stored_or_logged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ttl = 0.5
    with FakeUpstream.running() as up:
        data = keyed_data(up.url, tmp_path, monkeypatch, key_cache_seconds=ttl, access_log_sample=1.0)
        with running(plan.parse(data, base_dir=tmp_path)) as gw:
            status, made = call(gw.url, "POST", "/admin/keys", {"name": "app", "team": "search", "rpm": 60,
                                                                "routers": ["auto"]})
            assert status == 201 and made["created_by"] == "admin" and made["team"] == "search"
            key = made["key"]
            assert key.startswith("gs-") and len(key) >= 3 + 32 and made["prefix"] == key[:8] + "\u2026"
            assert ask(gw.url, key).status == 200
            refused = ask(gw.url, key, model="strong")
            assert refused.status == 403 and b"model_not_allowed" in refused.data
            # Widened by an admin: the replica applies it once its cached entry is older than the interval.
            assert call(gw.url, "PATCH", "/admin/keys/app", {"routers": None})[0] == 200
            time.sleep(ttl + 0.1)
            ok = ask(gw.url, key, model="strong")
            assert ok.status == 200
            status, revoked = call(gw.url, "DELETE", "/admin/keys/app")
            assert status == 200 and revoked["revoked_by"] == "admin" and revoked["revoked_at"] is not None
            time.sleep(ttl + 0.1)
            gone = ask(gw.url, key)
            assert gone.status == 401 and b"invalid_api_key" in gone.data
            status, listed = call(gw.url, "GET", "/admin/keys")
            drained(gw)
            rows = {r["id"]: r for r in gw.gateway.store.traces()}
    assert status == 200 and [(k["name"], k["state"]) for k in listed["data"]] == [("app", "revoked")]
    assert "hash" not in listed["data"][0] and "key" not in listed["data"][0]
    assert listed["data"][0]["spend_month_usd"] > 0
    trace = rows[ok.headers["x-gearshift-trace-id"]]
    assert (trace["client"], trace["team"], trace["router"]) == ("app", "search", "strong")
    # The key itself is nowhere: not in the database files, not in a log line.
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("traces.db*"))
    assert key.encode() not in stored and key[8:].encode() not in stored
    assert key_hash(os.environ[SECRET_ENV].encode(), key).encode() in stored
    assert key not in caplog.text and key[8:] not in caplog.text
    assert any("app" in r.getMessage() or getattr(r, "client", None) == "app" for r in caplog.records)


def test_an_expired_key_is_refused_at_once_though_its_entry_is_cached(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeUpstream.running() as up:
        data = keyed_data(up.url, tmp_path, monkeypatch, key_cache_seconds=3600)
        with running(plan.parse(data, base_dir=tmp_path)) as gw:
            status, made = call(gw.url, "POST", "/admin/keys", {"name": "brief", "expires": time.time() + 1.0})
            assert status == 201
            assert ask(gw.url, made["key"]).status == 200
            lookups = gw.gateway.keyring.lookups
            time.sleep(max(0.0, made["expires"] - time.time()) + 0.05)
            expired = ask(gw.url, made["key"])
            assert gw.gateway.keyring.lookups == lookups  # refused from the cached entry's expiry
            assert expired.status == 401 and b"expired_api_key" in expired.data
            assert call(gw.url, "GET", "/admin/keys")[1]["data"][0]["state"] == "expired"


def test_the_admin_api_needs_an_admin_key_and_names_the_wrong_field(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeUpstream.running() as up:
        data = keyed_data(up.url, tmp_path, monkeypatch)
        with running(plan.parse(data, base_dir=tmp_path)) as gw:
            url = gw.url
            assert call(url, "GET", "/admin/keys", key=None)[0] == 401
            assert call(url, "GET", "/admin/keys", key="gs-not-a-key")[0] == 401
            status, err = call(url, "POST", "/admin/keys", {"name": "x"}, key=USER)
            assert status == 403 and err["error"]["type"] == "invalid_request_error"
            status, plain = call(url, "POST", "/admin/keys", {"name": "plain"})
            assert status == 201 and plain["admin"] is False
            assert call(url, "GET", "/admin/keys", key=plain["key"])[0] == 403
            status, boss = call(url, "POST", "/admin/keys", {"name": "boss", "admin": True, "team": "ads"})
            assert status == 201
            # A virtual admin key administers too, and is recorded as who did it.
            status, made = call(url, "POST", "/admin/keys", {"name": "made-by-boss"}, key=boss["key"])
            assert status == 201 and made["created_by"] == "boss"
            assert call(url, "POST", "/admin/keys/made-by-boss/revoke", key=boss["key"])[1]["revoked_by"] == "boss"
            bad = {
                b"{not json": None,
                b"[1, 2]": None,
                b'{"name": 5}': "name",
                b'{"name": "a b"}': "name",
                b'{"name": "ok", "team": "nope"}': "team",
                b'{"name": "ok", "rpm": "10"}': "rpm",
                b'{"name": "ok", "rpm": 0}': "rpm",
                b'{"name": "ok", "usd_day": -1}': "usd_day",
                b'{"name": "ok", "routers": "auto"}': None,  # a string is the CLI's list form: accepted
                b'{"name": "ok2", "routers": [1]}': "routers",
                b'{"name": "ok2", "models": ["gpt-9"]}': "models",
                b'{"name": "ok2", "admin": "yes"}': "admin",
                b'{"name": "ok2", "expires": "soon"}': "expires",
                b'{"name": "ok2", "expires": 1}': "expires",
                b'{"name": "ok2", "colour": "red"}': "colour",
            }
            for raw, field in bad.items():
                status, err = call(url, "POST", "/admin/keys", raw=raw)
                if raw == b'{"name": "ok", "routers": "auto"}':
                    assert status == 201, err
                    continue
                assert status == 400 and err["error"]["param"] == field, (raw, err)
            assert call(url, "POST", "/admin/keys", {"name": "plain"})[1]["error"]["code"] == "key_exists"
            status, err = call(url, "POST", "/admin/keys", {"name": "user"})
            assert status == 409 and "client_keys" in err["error"]["message"]
            assert call(url, "PATCH", "/admin/keys/nobody", {"rpm": 5})[0] == 404
            assert call(url, "PATCH", "/admin/keys/plain", {"name": "renamed"})[1]["error"]["param"] == "name"
            assert call(url, "PATCH", "/admin/keys/plain", {})[0] == 400
            assert call(url, "PUT", "/admin/keys")[0] == 405
            status, listed = call(url, "GET", "/admin/keys/plain")
            assert status == 200 and listed["name"] == "plain" and "key" not in listed
            assert ask(url, ADMIN).status == 200  # config keys keep working beside virtual ones


def test_the_lookup_goes_by_hash_through_the_unique_index_and_the_cache_keeps_the_store_off(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "keys.db")
    plan_ = store._db.execute("EXPLAIN QUERY PLAN " + KEY_BY_HASH, ("x",)).fetchall()
    assert "USING INDEX keys_hash (hash=?)" in str(plan_)
    secret = b"k" * 32
    token = "gs-" + "a" * 43
    now = time.time()
    store.add_key({"name": "app", "team": None, "prefix": token[:8], "created": now, "updated": now}, key_hash(secret, token))
    t = [0.0]
    ring = KeyRing(store, secret, ttl=30.0, size=4, clock=lambda: t[0])

    async def find(tok: str):  # type: ignore[no-untyped-def]
        return await ring.find(tok.encode(), {})

    async def scenario() -> None:
        assert (await find(token)).name == "app"
        for _ in range(50):
            assert (await find(token)) is not None and (await find("gs-wrong")) is None
            assert await find("not-a-gearshift-key") is None  # not our shape: no hash, no store read
        assert ring.lookups == 2  # one read for the key, one for the wrong one: the rest from the cache
        for i in range(40):  # a flood of different wrong keys: bounded memory, the real key stays
            await find(f"gs-flood-{i}")
        assert len(ring._unknown) == 4 and len(ring._found) == 1
        store.revoke_key("app", "alice")
        assert (await find(token)) is not None  # still cached...
        t[0] += 30.0
        assert (await find(token)) is None  # ...until the interval has passed

    asyncio.run(scenario())
    store.close()
