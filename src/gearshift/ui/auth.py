"""Who may use the UI: admin client keys, a signed session cookie, and a CSRF token for actions.

The cookie is `name|expires|hmac` signed with GEARSHIFT_UI_SECRET when set (several replicas or
processes then accept each other's sessions), else with a random secret made when this module is
imported: `serve --workers N` imports it before forking, so its workers share that secret; a
restart signs everyone out."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Mapping

COOKIE = "gearshift_ui"
SESSION_SECONDS = 12 * 3600
SECRET_ENV = "GEARSHIFT_UI_SECRET"
_PROCESS_SECRET = os.urandom(32)


def secret() -> bytes:
    """The key sessions are signed with (the environment's, else this process's)."""
    env = os.environ.get(SECRET_ENV)
    return env.encode() if env else _PROCESS_SECRET


def _sign(text: str) -> str:
    return hmac.new(secret(), text.encode(), hashlib.sha256).hexdigest()


def admin_named(presented: str, admins: Mapping[str, bytes]) -> str | None:
    """The name of the admin key whose secret was presented, else None (constant time per key)."""
    given = presented.encode()
    found = None
    for name, key in admins.items():
        if key and hmac.compare_digest(given, key):
            found = name
    return found


def session_cookie(name: str, now: float | None = None) -> str:
    """A session for an admin key's name, valid SESSION_SECONDS."""
    body = f"{name}|{int((now or time.time()) + SESSION_SECONDS)}"
    return f"{body}|{_sign(body)}"


def session_name(cookie: str | None, admins: Mapping[str, bytes], now: float | None = None) -> str | None:
    """The admin key a session cookie belongs to, if its signature holds, it has not expired and the
    key is still an admin key in the config in force."""
    if not cookie or cookie.count("|") != 2:
        return None
    body, _, sig = cookie.rpartition("|")
    name, _, expires = body.partition("|")
    if not hmac.compare_digest(sig, _sign(body)) or not expires.isdigit():
        return None
    if int(expires) < (now or time.time()) or name not in admins:
        return None
    return name


def csrf_token(cookie: str) -> str:
    """The CSRF token of a session: derived from its cookie, so only a page that can read our
    same-origin JSON (the session endpoint) learns it."""
    return _sign("csrf|" + cookie)


def csrf_ok(cookie: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(cookie), token or "")
