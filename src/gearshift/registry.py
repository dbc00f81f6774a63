"""One registry shape for every extension point: a `kind` string -> the class that implements it.

A registry finds its kinds by importing the modules of its package (all but `base` and private
ones) on first lookup, and takes every class there that subclasses its base and sets `kind` itself.
So adding a router, gate, provider, store or encoder is adding one module: no table to edit.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from gearshift.errors import ConfigError

T = TypeVar("T")


class Registry(Mapping[str, type[T]], Generic[T]):
    """Kinds of one extension point. Classes declare `kind: ClassVar[str]`, optionally `aliases`
    (other names of the same kind) and `registered = False` (a helper class sharing a kind)."""

    def __init__(self, package: str, base: type[Any], what: str) -> None:  # type[Any]: bases are abstract
        self.package = package
        self.base = base
        self.what = what  # e.g. "router kind", used in errors
        self._kinds: dict[str, type[T]] | None = None
        self._extra: dict[str, type[T]] = {}

    def _scan(self) -> dict[str, type[T]]:
        if self._kinds is not None:
            return self._kinds
        kinds: dict[str, type[T]] = {}
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name == "base" or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{self.package}.{info.name}")
            for cls in vars(module).values():
                if self._is_kind(cls, module.__name__):
                    for name in (cls.kind, *getattr(cls, "aliases", ())):
                        if kinds.get(name, cls) is not cls:
                            raise TypeError(f"{self.what} {name!r} is defined twice: {kinds[name]} and {cls}")
                        kinds[name] = cls
        self._kinds = kinds
        return kinds

    def _is_kind(self, cls: object, module: str) -> bool:
        return (isinstance(cls, type) and issubclass(cls, self.base) and cls.__module__ == module
                and "kind" in vars(cls) and vars(cls).get("registered", True) and not inspect.isabstract(cls))

    def register(self, cls: type[T]) -> type[T]:
        """Add a kind defined outside the package (tests, plugins); usable as a decorator."""
        self._extra[getattr(cls, "kind")] = cls  # noqa: B009 - T is unbounded, so no attribute access
        return cls

    def pop(self, kind: str, default: type[T] | None = None) -> type[T] | None:
        """Remove a kind added with `register`."""
        return self._extra.pop(kind, default)

    def resolve(self, kind: object, where: str) -> type[T]:
        """The class of `kind`; ConfigError `where: bad value ...; allowed: [...]` for an unknown one."""
        cls = self.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ConfigError(f"{where}: bad value {kind!r}; allowed: {sorted(self)}")
        return cls

    def __getitem__(self, kind: str) -> type[T]:
        if kind in self._extra:
            return self._extra[kind]
        return self._scan()[kind]

    def __iter__(self) -> Iterator[str]:
        return iter({**self._scan(), **self._extra})

    def __len__(self) -> int:
        return len({**self._scan(), **self._extra})

    def __repr__(self) -> str:
        return f"Registry({self.package!r}, {sorted(self)})"
