"""Who may use the UI: admin client keys, a signed session cookie, and a CSRF token for actions.

The cookie is `name|expires|ref|hmac`: `ref` is empty for a config key, and for a virtual key the HMAC
the store keeps of it (never the key), by which each request finds the key again (revoked, expired or no
longer admin: no session). It is signed with GEARSHIFT_UI_SECRET when set (several replicas or
processes then accept each other's sessions), else with a random secret made when this module is
imported: `serve --workers N` imports it before forking, so its workers share that secret; a
restart signs everyone out."""

from __future__ import annotations

import hashlib
import hmac
import os
import time

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


def session_cookie(name: str, ref: str = "", now: float | None = None) -> str:
    """A session for an admin key's name (and a virtual key's stored HMAC), valid SESSION_SECONDS."""
    body = f"{name}|{int((now or time.time()) + SESSION_SECONDS)}|{ref}"
    return f"{body}|{_sign(body)}"


def session_of(cookie: str | None, now: float | None = None) -> tuple[str, str] | None:
    """(key name, ref) of a session cookie whose signature holds and that has not expired; whether the
    key may still sign in is the caller's to ask."""
    if not cookie or cookie.count("|") != 3:
        return None
    body, _, sig = cookie.rpartition("|")
    name, expires, ref = body.split("|")
    if not hmac.compare_digest(sig, _sign(body)) or not expires.isdigit() or int(expires) < (now or time.time()):
        return None
    return name, ref


def csrf_token(cookie: str) -> str:
    """The CSRF token of a session: derived from its cookie, so only a page that can read our
    same-origin JSON (the session endpoint) learns it."""
    return _sign("csrf|" + cookie)


def csrf_ok(cookie: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(cookie), token or "")
