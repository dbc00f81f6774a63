"""Dialects: one module per client-facing API (a surface), translating it to and from the internal
chat request and answer, so that every surface shares the gateway's one request pipeline.

Adding an API means adding a module here with a `Dialect` subclass that sets `kind` (its trace
endpoint) and `paths` (the routes it answers): DIALECTS finds it, and `create_app` routes it."""

from __future__ import annotations

from gearshift.gateway.dialects.base import Dialect, StreamRender
from gearshift.registry import Registry

DIALECTS: Registry[Dialect] = Registry("gearshift.gateway.dialects", Dialect, "dialect")

__all__ = ["DIALECTS", "Dialect", "StreamRender"]
