"""The dashboard: pages over the store, served by the gateway at /ui or alone by `gearshift ui`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from gearshift.gateway.app import GATEWAY_KEY
from gearshift.ui.web import Source, install, standalone


def gateway_routes(reports: Path | None = None) -> Any:
    """What `serve` passes the gateway: a function adding /ui to its application, reading the store
    and the keys of the config in force (a reload's keys apply at once) and the virtual keys."""

    def add(app: web.Application) -> None:
        gw = app[GATEWAY_KEY]

        def states() -> dict[str, Any]:
            return gw.versions.states() if gw.versions is not None else {}

        # The gateway's own keys in force and ring: one lookup (and one cache) for its traffic and its UI.
        install(app, Source(lambda: gw.config, gw.store, lambda: gw.live.keys, gw.keyring, states, reports))

    return add


__all__ = ["Source", "gateway_routes", "install", "standalone"]
