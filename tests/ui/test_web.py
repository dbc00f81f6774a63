"""`gearshift ui` alone over a store (a real server in another process): who may read and act, what
is never shown, and how pages are served."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
import yaml

from gearshift import plan
from gearshift.gateway.keys import create_key
from gearshift.gateway.server import free_port, running
from gearshift.store.sqlite import SQLiteStore
from gearshift.trace import Call
from gearshift.ui import gateway_routes
from gearshift.ui.web import STATIC
from tests.support import keys as keyed
from tests.support.fake_upstream import FakeUpstream
from tests.support.traces import trace
from tests.support.ui_helpers import ADMIN_KEY, APP_KEY, BATCH_KEY, ui_config_file

UPSTREAM_SECRET = "sk-upstream-never-shown"
KEY_SECRET_ENV, KEY_SECRET = "GS_UI_KEY_SECRET", "k" * 40
UI = tuple[str, SQLiteStore, Path]  # the dashboard's URL, its store, its config file


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def call(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None,
         form: dict[str, str] | None = None) -> Reply:
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif form is not None:
        data = "&".join(f"{k}={v}" for k, v in form.items()).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, data=data, headers=headers, method=method)) as r:
            return Reply(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.headers, e.read())


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    tmp = tmp_path_factory.mktemp("ui-alone")
    path = ui_config_file(tmp)
    # Virtual keys on (looked up again after 1 s), and a proxy in front that ends TLS: the cookie is Secure.
    data = yaml.safe_load(path.read_text())
    data["server"].update(key_secret_env=KEY_SECRET_ENV, key_cache_seconds=1, ui_secure_cookie="always")
    path.write_text(yaml.safe_dump(data))
    store = SQLiteStore(tmp / "traces.db")
    now = time.time()
    rows = []
    for i in range(40):
        client = ("app", "batch")[i % 2]
        t = trace("gearshift/cascade", created=now - 60 * i, client=client, team="search" if client == "app" else None)
        if i % 5 == 0:
            t.calls.append(Call(model="gpt-4-1106", role="escalation", cost_usd=0.01))
        rows.append(t)
    store.write(rows)
    v1 = store.add_router_version("gearshift/cascade", {"threshold": 0.4}, {}, "lab")
    store.add_router_version("gearshift/cascade", {"threshold": 0.6}, {}, "lab")
    store.promote("gearshift/cascade", v1, "alice")
    port = free_port()
    env = {**os.environ, "GS_TEST_UPSTREAM_KEY": UPSTREAM_SECRET, KEY_SECRET_ENV: KEY_SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "gearshift.cli", "ui", "--config", str(path), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _up(url):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        yield url, store, path
    finally:
        proc.terminate()
        proc.wait(30)


def _up(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "/ui/login", timeout=1).close()
    except OSError:
        return False
    return True


def _session(url: str, key: str = ADMIN_KEY, secure: bool = True) -> tuple[str, str]:
    """(cookie header, CSRF token) of an admin signed in through the login form."""
    r = call(url + "/ui/login", "POST", form={"key": key})
    assert r.status == 303 and r.headers["Location"] == "/ui/"
    set_cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/ui" in set_cookie
    # The `ui` fixture's server.ui_secure_cookie: always (plain HTTP from a proxy); auto over HTTP: not Secure.
    assert ("Secure" in set_cookie) == secure
    jar = SimpleCookie(set_cookie)
    cookie = "; ".join(f"{k}={m.value}" for k, m in jar.items())
    token = call(url + "/ui/api/session", headers={"Cookie": cookie}).json()["csrf"]
    return cookie, token


ENDPOINTS = ("overview", "traces", "routers", "watch", "ab", "keys", "reports")


def test_without_an_admin_key_there_is_no_data(ui: UI) -> None:
    url, _, _ = ui
    for name in ENDPOINTS:
        for headers in ({}, {"Authorization": f"Bearer {APP_KEY}"}, {"Authorization": "Bearer nope"},
                        {"Cookie": "gearshift_ui=ops|99999999999|forged"}):
            r = call(f"{url}/ui/api/{name}", headers=headers)
            assert r.status == 401 and set(r.json()) == {"error"}, (name, headers)
    page = call(url + "/ui/overview")
    assert page.status == 302 and page.headers["Location"] == "/ui/login"
    wrong = call(url + "/ui/login", "POST", form={"key": BATCH_KEY})
    assert wrong.status == 303 and wrong.headers["Location"] == "/ui/login?error=wrong-key"
    assert "Set-Cookie" not in wrong.headers


def test_an_admin_reads_every_page_and_no_secret_is_in_any_answer(ui: UI) -> None:
    url, store, _ = ui
    cookie, _ = _session(url)
    bodies = []
    for name in ENDPOINTS:
        by_cookie = call(f"{url}/ui/api/{name}", headers={"Cookie": cookie})
        by_bearer = call(f"{url}/ui/api/{name}", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert by_cookie.status == by_bearer.status == 200, name
        assert by_cookie.headers["Cache-Control"] == "no-store"
        bodies.append(by_cookie.body)
    text = b"".join(bodies).decode()
    for secret in (ADMIN_KEY, APP_KEY, BATCH_KEY, UPSTREAM_SECRET, "GS_UI_ADMIN"):
        assert secret not in text
    overview = json.loads(bodies[0])
    assert overview["summary"]["requests"] == store.count() == 40
    assert overview["summary"]["cascade"]["escalation_rate"] == pytest.approx(8 / 40)
    keys = {c["client"]: c for c in json.loads(bodies[5])["clients"]}
    assert keys["app"]["requests"] == keys["batch"]["requests"] == 20


def test_promote_and_rollback_need_the_admin_key_and_the_csrf_token(ui: UI) -> None:
    url, store, _ = ui
    router = "gearshift/cascade"
    before = store.active_version(router)
    assert before is not None and before["version"] == 1
    cookie, token = _session(url)
    promote = url + "/ui/api/routers/promote"
    body = {"router": router, "version": 2}
    refused = [
        call(promote, "POST", body),  # nobody
        call(promote, "POST", body, {"Authorization": f"Bearer {APP_KEY}"}),  # a key that is not admin
        call(promote, "POST", body, {"Cookie": cookie}),  # a session without its token (a cross-site form)
        call(promote, "POST", body, {"Cookie": cookie, "X-CSRF-Token": "0" * 64}),
        call(url + "/ui/api/routers/rollback", "POST", {"router": router}, {"Cookie": cookie}),
    ]
    assert [r.status for r in refused] == [401, 401, 403, 403, 403]
    assert store.active_version(router) == before
    done = call(promote, "POST", body, {"Cookie": cookie, "X-CSRF-Token": token})
    assert done.status == 200 and done.json()["promoted_by"] == "ops (ui)"
    active = store.active_version(router)
    assert active is not None and active["version"] == 2 and active["promoted_by"] == "ops (ui)"
    assert time.time() - active["promoted_at"] < 60
    back = call(url + "/ui/api/routers/rollback", "POST", {"router": router}, {"Authorization": f"Bearer {ADMIN_KEY}"})
    assert back.status == 200 and back.json()["version"] == 1
    active = store.active_version(router)
    assert active is not None and active["version"] == 1 and active["promoted_by"] == "ops (ui rollback)"
    missing = call(promote, "POST", {"router": router, "version": 9}, {"Cookie": cookie, "X-CSRF-Token": token})
    assert missing.status == 404 and "no version 9" in missing.json()["error"]


def test_pages_and_assets_are_served_with_their_types_and_a_strict_policy(ui: UI) -> None:
    url, _, _ = ui
    cookie, _ = _session(url)
    page = call(url + "/ui/traces", headers={"Cookie": cookie})
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert b"<script>" not in page.body and b"http" not in page.body.replace(b"http-equiv", b"")
    for name, ctype in (("app.js", "text/javascript"), ("uPlot.iife.min.js", "text/javascript"),
                        ("app.css", "text/css"), ("uPlot.min.css", "text/css")):
        r = call(f"{url}/ui/static/{name}")
        assert r.status == 200 and r.headers["Content-Type"].startswith(ctype), name
    assert call(url + "/ui/static/..%2Fweb.py").status == 404
    # Everything the browser loads is vendored in the package, within the budget README states.
    assert sum(f.stat().st_size for f in STATIC.iterdir()) <= 150_000
    assert call(url + "/ui/nowhere", headers={"Cookie": cookie}).status == 404


def test_the_keys_page_gives_team_spend_and_revokes_a_virtual_key_with_the_admin_key_and_token(
        ui: UI) -> None:
    url, store, _ = ui
    store.add_key({"name": "search-app", "team": "search", "prefix": "gs-abcd", "created": time.time(),
                   "created_by": "ops", "updated": time.time()}, "f" * 64)
    page = call(url + "/ui/api/keys?hours=24", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    teams = {t["team"]: t for t in page["teams"]}
    stored = [r for r in store.traces() if r["team"] == "search"]
    assert teams["search"]["requests"] == len(stored) == 20
    assert teams["search"]["spend_usd"] == pytest.approx(sum(r["cost_usd"] for r in stored))
    assert page["budgets"]["search"]["usd_month"] == 100
    assert [(k["name"], k["state"]) for k in page["virtual"]] == [("search-app", "active")]
    assert "f" * 64 not in json.dumps(page)  # the key's hash is never shown
    revoke = url + "/ui/api/keys/revoke"
    cookie, token = _session(url)
    for refused in (call(revoke, "POST", {"name": "search-app"}),
                    call(revoke, "POST", {"name": "search-app"}, {"Authorization": f"Bearer {APP_KEY}"}),
                    call(revoke, "POST", {"name": "search-app"}, {"Cookie": cookie})):
        assert refused.status in (401, 403)
    assert store.key("search-app")["revoked_at"] is None
    done = call(revoke, "POST", {"name": "search-app"}, {"Cookie": cookie, "X-CSRF-Token": token})
    assert done.status == 200 and done.json()["revoked_by"] == "ops (ui)"
    assert store.key("search-app")["revoked_by"] == "ops (ui)"
    missing = call(revoke, "POST", {"name": "nobody"}, {"Cookie": cookie, "X-CSRF-Token": token})
    assert missing.status == 404


def test_a_virtual_admin_key_signs_in_until_it_is_revoked(ui: UI, monkeypatch: pytest.MonkeyPatch) -> None:
    url, store, path = ui
    monkeypatch.setenv(KEY_SECRET_ENV, KEY_SECRET)
    config = plan.load(path).config
    admin, _ = create_key(store, config, KEY_SECRET.encode(), {"name": "oncall", "admin": True}, "test")
    user, _ = create_key(store, config, KEY_SECRET.encode(), {"name": "search-bot", "team": "search"}, "test")
    # A virtual key without admin is refused, as a config key without it is.
    wrong = call(url + "/ui/login", "POST", form={"key": user})
    assert wrong.status == 303 and wrong.headers["Location"] == "/ui/login?error=wrong-key"
    assert call(url + "/ui/api/overview", headers={"Authorization": f"Bearer {user}"}).status == 401
    cookie, token = _session(url, admin)
    assert call(url + "/ui/api/session", headers={"Cookie": cookie}).json()["who"] == "oncall"
    assert call(url + "/ui/api/overview", headers={"Authorization": f"Bearer {admin}"}).status == 200
    assert admin not in cookie  # the session holds what the store keeps of the key, never the key
    revoked = call(url + "/ui/api/keys/revoke", "POST", {"name": "search-bot"}, {"Cookie": cookie, "X-CSRF-Token": token})
    assert revoked.status == 200 and revoked.json()["revoked_by"] == "oncall (ui)"
    # Revoked, the key's session ends once the UI looks the key up again (server.key_cache_seconds: 1).
    store.revoke_key("oncall", "test")
    deadline = time.monotonic() + 30
    while call(url + "/ui/api/overview", headers={"Cookie": cookie}).status == 200:
        assert time.monotonic() < deadline, "the revoked key's session still works"
        time.sleep(0.2)
    assert call(url + "/ui/api/overview", headers={"Cookie": cookie}).status == 401
    assert call(url + "/ui/api/overview", headers={"Authorization": f"Bearer {admin}"}).status == 401
    assert call(url + "/ui/overview", headers={"Cookie": cookie}).status == 302
    gone = call(url + "/ui/login", "POST", form={"key": admin})
    assert gone.headers["Location"] == "/ui/login?error=wrong-key"


def test_in_a_gateway_a_virtual_admin_key_session_ends_when_the_key_loses_admin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeUpstream.running() as up:
        data = keyed.keyed_data(up.url, tmp_path, monkeypatch, key_cache_seconds=0.5)
        with running(plan.parse(data, base_dir=tmp_path), routes=gateway_routes()) as gw:
            status, made = keyed.call(gw.url, "POST", "/admin/keys", {"name": "oncall", "admin": True})
            assert status == 201
            cookie, _ = _session(gw.url, made["key"], secure=False)
            assert call(gw.url + "/ui/api/session", headers={"Cookie": cookie}).json()["who"] == "oncall"
            assert keyed.call(gw.url, "PATCH", "/admin/keys/oncall", {"admin": False})[0] == 200
            deadline = time.monotonic() + 30
            while call(gw.url + "/ui/api/watch", headers={"Cookie": cookie}).status == 200:
                assert time.monotonic() < deadline, "the demoted key's session still works"
                time.sleep(0.1)
            assert call(gw.url + "/ui/api/session", headers={"Cookie": cookie}).status == 401
            # The key still serves requests; it only no longer administers.
            assert keyed.ask(gw.url, made["key"]).status == 200
