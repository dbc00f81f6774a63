"""The dashboard's HTTP routes under /ui: pages (one HTML shell and app.js), JSON endpoints, login.

Mounted on a gateway's application by the command that composes it (`gearshift serve`), or served
alone by `gearshift ui --config F` over the store; either way every figure is read from the store,
so one UI sees every replica's traffic."""

from __future__ import annotations

import asyncio
import json
import math
import mimetypes
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from gearshift.config import Config
from gearshift.errors import GearshiftError, Unauthorized
from gearshift.gateway.keys import KeyRing, authenticate, revoke_key
from gearshift.plan import key_secret
from gearshift.principal import Principal, config_keys, key_hash
from gearshift.store.base import TraceStore
from gearshift.ui import auth, data

STATIC = Path(__file__).parent / "static"
PAGES = ("overview", "routers", "watch", "traces", "ab", "keys", "reports")
# No inline script or style, nothing from elsewhere: the page runs only our files.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'"
CSRF_HEADER = "X-CSRF-Token"
BEARER = "Authorization: Bearer <admin key>"


@dataclass
class Source:
    """Where the UI reads from: the config in force, the store, and who may sign in: the config's keys in
    force (principal, secret) and the virtual keys' ring (None: virtual keys are off)."""

    config: Callable[[], Config]
    store: TraceStore
    client_keys: Callable[[], Sequence[tuple[Principal, bytes]]]
    ring: KeyRing | None = None
    states: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None  # live router states, in a gateway
    reports: Path | None = None  # where lab reports are kept


def from_config(config: Config, store: TraceStore, reports: Path | None = None) -> Source:
    """A source over a config's store and keys (`gearshift ui`: no gateway running here); virtual keys
    are looked up as a gateway replica does, with the same secret and cache interval."""
    keys = config_keys(config)
    secret = key_secret(config)
    ring = KeyRing(store, secret, config.server.key_cache_seconds) if secret else None
    return Source(lambda: config, store, lambda: keys, ring, reports=reports)


SOURCE_KEY: web.AppKey[Source] = web.AppKey("ui_source")
WHO_KEY: web.RequestKey[str | None] = web.RequestKey("ui_who")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body, default=_plain, allow_nan=False), status=status,
                        content_type="application/json", headers={"Cache-Control": "no-store"})


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    raise TypeError(f"not JSON: {type(v).__name__}")


async def admin_key(src: Source, token: str) -> Principal | None:
    """The admin key a presented key is (config or virtual, checked as the gateway checks it), else None."""
    if not token:
        return None
    try:
        found = await authenticate(token.encode(), src.client_keys(), src.ring, src.config().teams, BEARER)
    except Unauthorized:
        return None
    return found if found.admin else None


async def who(request: web.Request) -> str | None:
    """The admin key behind a request: a bearer admin key, or a session whose key is still an admin key
    (a virtual one not revoked or expired, as its ring last read it: within server.key_cache_seconds)."""
    if WHO_KEY not in request:  # asked once per request (a lookup may read the store)
        request[WHO_KEY] = await _who(request)
    return request[WHO_KEY]


async def _who(request: web.Request) -> str | None:
    src = request.app[SOURCE_KEY]
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        found = await admin_key(src, header[7:].strip())
        return found.name if found else None
    session = auth.session_of(request.cookies.get(auth.COOKIE))
    if session is None:
        return None
    name, ref = session
    if not ref:  # a config key: still an admin key in the config in force (a reload counts)
        return name if any(p.admin and p.name == name for p, _ in src.client_keys()) else None
    if src.ring is None:
        return None
    key = await src.ring.find_hash(ref, src.config().teams)
    alive = key is not None and key.admin and key.name == name and not key.expired(time.time())
    return name if alive else None


def api(handler: Handler, action: bool = False) -> Handler:
    """A JSON endpoint: 401 without an admin key; an action (POST) from a session also needs its CSRF token."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        name = await who(request)
        if name is None:
            return _json({"error": "an admin key is required: sign in at /ui/login, or send "
                                   "Authorization: Bearer <admin key>"}, 401)
        # A bearer key is never sent by a browser on its own: only a session (cookie) needs the token.
        bearer = request.headers.get("Authorization", "").startswith("Bearer ")
        if action and not bearer and not auth.csrf_ok(request.cookies.get(auth.COOKIE, ""),
                                                      request.headers.get(CSRF_HEADER)):
            return _json({"error": "missing or wrong CSRF token"}, 403)
        return await handler(request)

    return guarded


def _hours(request: web.Request, default: float = 24.0) -> float:
    try:
        h = float(request.query.get("hours", default))
    except ValueError:
        raise web.HTTPBadRequest(text="hours: a number") from None
    return min(max(h, 1 / 60), 24 * 366)


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    # Store reads block: keep the gateway's event loop serving traffic meanwhile.
    return await asyncio.to_thread(fn, *args)


# --- pages ---------------------------------------------------------------------------------------


def _file(name: str, content_type: str | None = None) -> web.Response:
    path = STATIC / name
    ctype = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    resp = web.Response(body=path.read_bytes(), content_type=ctype)
    resp.headers["Cache-Control"] = "no-cache"
    return resp


def _secure(handler: Handler) -> Handler:
    """Every UI response carries the CSP and its siblings (per route: gateway traffic pays nothing)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as e:
            resp = e
        for k, v in (("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
                     ("Referrer-Policy", "same-origin"), ("X-Frame-Options", "DENY")):
            resp.headers.setdefault(k, v)
        if isinstance(resp, web.HTTPException):
            raise resp
        return resp

    return wrapped


async def page(request: web.Request) -> web.StreamResponse:
    if await who(request) is None:
        raise web.HTTPFound("/ui/login")
    name = request.match_info.get("page", "overview")
    if name not in PAGES:
        raise web.HTTPNotFound()
    return _file("index.html", "text/html")


async def login_page(request: web.Request) -> web.StreamResponse:
    return _file("index.html", "text/html")  # app.js shows the sign-in form on /ui/login


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    src = request.app[SOURCE_KEY]
    token = str(form.get("key", "")).strip()
    found = await admin_key(src, token)
    if found is None:
        # Without admin keys nobody can sign in: the login page says how to add one.
        none = src.ring is None and not any(p.admin for p, _ in src.client_keys())
        raise web.HTTPSeeOther(f"/ui/login?error={'no-admin-keys' if none else 'wrong-key'}")
    # A virtual key's session carries what the store keeps of it, so each request finds the key again.
    ref = key_hash(src.ring.secret, token) if found.virtual and src.ring is not None else ""
    resp = web.HTTPSeeOther("/ui/")
    secure = request.secure or src.config().server.ui_secure_cookie == "always"
    resp.set_cookie(auth.COOKIE, auth.session_cookie(found.name, ref), max_age=auth.SESSION_SECONDS, path="/ui",
                    httponly=True, samesite="Strict", secure=secure)
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    resp = web.HTTPSeeOther("/ui/login")
    resp.del_cookie(auth.COOKIE, path="/ui")
    raise resp


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if "/" in name or name.startswith(".") or not (STATIC / name).is_file():
        raise web.HTTPNotFound()
    return _file(name)


# --- JSON ----------------------------------------------------------------------------------------


async def session(request: web.Request) -> web.StreamResponse:
    cookie = request.cookies.get(auth.COOKIE)
    return _json({"who": await who(request), "csrf": auth.csrf_token(cookie) if cookie else None, "pages": PAGES})


# The pages whose figures are one read over a time range: page -> the data function and its arguments
# after the store and the config (the request's `hours` first).
FIGURES: dict[str, Callable[[web.Request, Source], tuple[Any, ...]]] = {
    "overview": lambda rq, src: (data.overview, _hours(rq)),
    "routers": lambda rq, src: (data.routers, _hours(rq), None, src.states() if src.states else None),
    "keys": lambda rq, src: (data.keys, _hours(rq)),
    "ab": lambda rq, src: (data.ab, _hours(rq), rq.query.get("router") or None),
    "watch": lambda rq, src: (data.watch, _hours(rq)),
}


def figures(page: str) -> Handler:
    """The JSON endpoint of one FIGURES page: its data function over the store, off the event loop."""

    async def handler(request: web.Request) -> web.StreamResponse:
        src = request.app[SOURCE_KEY]
        fn, *args = FIGURES[page](request, src)
        return _json(await _off_loop(fn, src.store, src.config(), *args))

    return handler


async def traces(request: web.Request) -> web.StreamResponse:
    src = request.app[SOURCE_KEY]
    try:
        found = await _off_loop(data.traces, src.store, dict(request.query))
    except ValueError as e:
        return _json({"error": str(e)}, 400)
    return _json(found)


async def trace(request: web.Request) -> web.StreamResponse:
    src = request.app[SOURCE_KEY]
    found = await _off_loop(data.trace_detail, src.store, request.match_info["id"])
    return _json(found) if found else _json({"error": "no such trace"}, 404)


async def _version_action(request: web.Request, rollback: bool) -> web.StreamResponse:
    src = request.app[SOURCE_KEY]
    try:
        body = await request.json()
        router = str(body["router"])
        version = None if rollback else int(body["version"])
    except (ValueError, KeyError, TypeError):
        return _json({"error": "body: {\"router\": name" + ("" if rollback else ", \"version\": n") + "}"}, 400)
    if rollback:
        target = data.rollback_target(await _off_loop(src.store.router_versions, router))
        if target is None:
            return _json({"error": f"{router}: no earlier promoted version to roll back to"}, 409)
        version = int(target["version"])
    by = f"{await who(request)} (ui{' rollback' if rollback else ''})"
    try:
        # The one way a version is promoted (as `gearshift routers promote`): the store records who and when.
        await _off_loop(src.store.promote, router, version, by)
    except KeyError as e:
        return _json({"error": str(e.args[0])}, 404)
    return _json({"router": router, "version": version, "promoted_by": by, "at": time.time()})


async def promote(request: web.Request) -> web.StreamResponse:
    return await _version_action(request, rollback=False)


async def rollback(request: web.Request) -> web.StreamResponse:
    return await _version_action(request, rollback=True)


async def revoke(request: web.Request) -> web.StreamResponse:
    """Revoke a virtual key (the one way: gateway.keys.revoke_key); the store records who and when."""
    src = request.app[SOURCE_KEY]
    try:
        name = str((await request.json())["name"])
    except (ValueError, KeyError, TypeError):
        return _json({"error": "body: {\"name\": key name}"}, 400)
    try:
        found = await _off_loop(revoke_key, src.store, name, f"{await who(request)} (ui)")
    except GearshiftError as e:
        return _json({"error": e.message}, e.status)
    return _json({"name": found["name"], "revoked_at": found.get("revoked_at"), "revoked_by": found.get("revoked_by")})


async def reports(request: web.Request) -> web.StreamResponse:
    return _json(data.reports(request.app[SOURCE_KEY].reports))


async def report(request: web.Request) -> web.StreamResponse:
    folder = request.app[SOURCE_KEY].reports
    name = request.match_info["name"]
    path = folder / name if folder else None
    if path is None or "/" in name or name.startswith(".") or not name.endswith(".html") or not path.is_file():
        raise web.HTTPNotFound()
    resp = web.Response(body=path.read_bytes(), content_type="text/html")
    resp.headers["Content-Security-Policy"] = REPORT_CSP  # a report is static HTML: no script runs
    return resp


def install(app: web.Application, source: Source) -> None:
    """Add the UI's routes under /ui to an application, before it starts."""
    app[SOURCE_KEY] = source
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/ui", page), ("GET", "/ui/", page), ("GET", "/ui/login", login_page), ("POST", "/ui/login", login),
        ("POST", "/ui/logout", logout), ("GET", "/ui/static/{name}", static),
        ("GET", "/ui/api/session", api(session)),
        *[("GET", f"/ui/api/{name}", api(figures(name))) for name in FIGURES],
        ("GET", "/ui/api/traces", api(traces)),
        ("GET", "/ui/api/traces/{id}", api(trace)),
        ("POST", "/ui/api/routers/promote", api(promote, action=True)),
        ("POST", "/ui/api/routers/rollback", api(rollback, action=True)),
        ("POST", "/ui/api/keys/revoke", api(revoke, action=True)),
        ("GET", "/ui/api/reports", api(reports)),
        ("GET", "/ui/reports/{name}", api(report)),
        ("GET", "/ui/{page}", page),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, _secure(handler))


def standalone(config: Config, store: TraceStore, reports: Path | None = None) -> web.Application:
    """The UI alone over a store (`gearshift ui`)."""
    app = web.Application()
    install(app, from_config(config, store, reports))
    return app
