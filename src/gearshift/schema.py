"""The config file's JSON Schema (`gearshift config-schema`), for editors.

Router options are a union discriminated on `kind`, one member per router kind in the registry, and
so are gate specs wherever a router option holds gates: a new kind appears here with no edit.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter, create_model

from gearshift.config import CacheConfig, Config, RecalibrateConfig, ShadowConfig
from gearshift.gates.base import GATE_LIST, GATES
from gearshift.routers import ROUTERS


def _router_union() -> Any:
    members: list[type[BaseModel]] = []
    for kind in sorted(ROUTERS):
        cls = ROUTERS[kind]
        members.append(create_model(
            f"{cls.__name__}Config", __base__=cls.Options, __doc__=cls.__doc__,
            kind=(Literal[kind], ...),  # type: ignore[valid-type]
            fallbacks=(list[str], Field(default_factory=list, description="models tried when the chosen one fails")),
            shadow=(ShadowConfig | None, None), recalibrate=(RecalibrateConfig | None, None),
            cache=(CacheConfig | None, None)))
    return Annotated[Union[tuple(members)], Field(discriminator="kind")]  # noqa: UP007 - built at run time


def _gate_items() -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON Schema of one gate spec (a mapping by kind, or a bare kind name) and its $defs."""
    members = [create_model(f"{GATES[k].__name__}Spec", __base__=GATES[k].Options, __doc__=GATES[k].__doc__,
                            kind=(Literal[k], ...))  # type: ignore[valid-type]
               for k in sorted(GATES)]
    spec: Any = Annotated[Union[tuple(members)], Field(discriminator="kind")]  # noqa: UP007
    kinds: Any = Literal[tuple(sorted(GATES))]
    schema = TypeAdapter(list[spec | kinds]).json_schema(ref_template="#/$defs/{model}")
    return schema["items"], schema.get("$defs", {})


def _place_gates(node: Any, items: dict[str, Any]) -> None:
    if isinstance(node, dict):
        if node.pop(GATE_LIST, False):
            node["items"] = items
        for value in node.values():
            _place_gates(value, items)
    elif isinstance(node, list):
        for value in node:
            _place_gates(value, items)


def config_schema() -> dict[str, Any]:
    """The whole config file as JSON Schema (draft 2020-12)."""
    routers: Any = dict[str, _router_union()]  # type: ignore[misc]
    model = create_model("GearshiftConfig", __base__=Config, __doc__="A gearshift config file.",
                         routers=(routers, Field(default_factory=dict)))
    schema = model.model_json_schema()
    items, defs = _gate_items()
    _place_gates(schema, items)
    schema.setdefault("$defs", {}).update(defs)
    schema["properties"].pop("base_dir", None)  # set by the loader, not written in files
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


__all__ = ["config_schema"]
