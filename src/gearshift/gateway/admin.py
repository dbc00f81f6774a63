"""The admin HTTP API of virtual keys, for an admin key only (a config key with `admin: true`, or a virtual
key created with `admin`):

    GET    /admin/keys                 every key (no key, no hash), its state and spend
    POST   /admin/keys                 create one: the answer holds the key, the only time it is shown
    GET    /admin/keys/{name}          one key
    PATCH  /admin/keys/{name}          change its team, routers, models, limits, expiry or admin flag
    DELETE /admin/keys/{name}          revoke it (also POST /admin/keys/{name}/revoke)

Errors are OpenAI's JSON shape with the status that fits (400 naming the field, 401, 403, 404, 409)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gearshift.errors import BadRequest, Forbidden, GearshiftError, NotFound, Unauthorized
from gearshift.gateway import keys
from gearshift.jsonfast import dumps, loads

if TYPE_CHECKING:
    from gearshift.gateway.app import Gateway

PATHS = {"/admin/keys": "GET, POST"}  # the paths with a fixed method set (for 405s)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=dumps(body), content_type="application/json")


def _public(record: Mapping[str, Any]) -> dict[str, Any]:
    """A key as the API shows it: never a hash (the store does not list it) nor the key."""
    return {"object": "key", **record}


class AdminAPI:
    """`/admin/keys` handlers of one gateway: each authenticates an admin key, then does one thing."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def _admin(self, request: web.Request) -> str:
        """The admin key's name (recorded as who did it); 401 without a valid key, 403 for a non-admin one."""
        principal = await self.gw.authenticate(request)
        if principal is None:
            raise Unauthorized("the admin API needs an admin key, and this gateway serves without keys")
        if not principal.admin:
            raise Forbidden(f"the key {principal.name!r} is not an admin key: /admin needs a key with `admin: true`")
        if self.gw.keyring is None:
            raise NotFound("virtual keys are off: set server.key_secret_env to enable them", code="keys_disabled")
        return principal.name

    async def _body(self, request: web.Request) -> Any:
        try:
            return loads(await request.read())
        except ValueError as e:
            raise BadRequest(f"request body is not valid JSON: {e}") from None

    def handler(self, act: Callable[[web.Request, str], Awaitable[web.Response]]) -> Callable[
            [web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                who = await self._admin(request)
            except Unauthorized as e:
                return self.gw._unauthenticated(e)
            except GearshiftError as e:
                return _json(e.to_json(), e.status)
            try:
                return await act(request, who)
            except GearshiftError as e:
                return _json(e.to_json(), e.status)

        return handle

    async def list(self, request: web.Request, who: str) -> web.Response:
        found = await asyncio.to_thread(keys.list_keys, self.gw.store)
        return _json({"object": "list", "data": [_public(r) for r in found]})

    async def create(self, request: web.Request, who: str) -> web.Response:
        body = await self._body(request)
        ring = self.gw.keyring
        assert ring is not None
        token, record = await asyncio.to_thread(keys.create_key, self.gw.store, self.gw.config, ring.secret, body, who)
        return _json({**_public(record), "key": token}, 201)

    async def get(self, request: web.Request, who: str) -> web.Response:
        name = request.match_info["name"]
        found = await asyncio.to_thread(self.gw.store.key, name)
        if found is None:
            raise NotFound(f"no key named {name!r}", param="name", code="key_not_found")
        return _json(_public(found))

    async def update(self, request: web.Request, who: str) -> web.Response:
        body = await self._body(request)
        found = await asyncio.to_thread(keys.update_key, self.gw.store, self.gw.config, request.match_info["name"], body)
        return _json(_public(found))

    async def revoke(self, request: web.Request, who: str) -> web.Response:
        found = await asyncio.to_thread(keys.revoke_key, self.gw.store, request.match_info["name"], who)
        return _json(_public(found))


def add_routes(app: web.Application, gateway: Gateway) -> None:
    """Route /admin/keys to a gateway's admin API."""
    api = AdminAPI(gateway)
    app.router.add_get("/admin/keys", api.handler(api.list))
    app.router.add_post("/admin/keys", api.handler(api.create))
    app.router.add_get("/admin/keys/{name}", api.handler(api.get))
    app.router.add_patch("/admin/keys/{name}", api.handler(api.update))
    app.router.add_delete("/admin/keys/{name}", api.handler(api.revoke))
    app.router.add_post("/admin/keys/{name}/revoke", api.handler(api.revoke))
