"""The registry: kinds found by importing a package's modules, one shape for every extension point."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gearshift.errors import ConfigError
from gearshift.learned.encoders import ENCODERS
from gearshift.providers import PROVIDERS, ReplayProvider
from gearshift.registry import Registry
from gearshift.routers import ROUTERS
from gearshift.routers.classifier import ClassifierRouter
from gearshift.store import STORES, check_url
from gearshift.store.postgres import PostgresStore


class Base:
    pass


def plugin_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pkg = tmp_path / "gs_plugins_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "base.py").write_text("raise RuntimeError('base modules are not scanned')\n")
    (pkg / "_private.py").write_text("raise RuntimeError('private modules are not scanned')\n")
    # Module names need not be kinds; helpers sharing a kind opt out; other classes are ignored.
    (pkg / "greetings.py").write_text(
        "from tests.test_registry import Base\n"
        "class Hello(Base):\n    kind = 'hello'\n    aliases = ('hi',)\n"
        "class HelloHelper(Hello):\n    kind = 'hello'\n    registered = False\n"
        "class Unrelated:\n    kind = 'unrelated'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "gs_plugins_test"


def test_kinds_are_found_lazily_by_importing_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry: Registry[Base] = Registry(plugin_package(tmp_path, monkeypatch), Base, "greeting kind")
    assert "gs_plugins_test.greetings" not in sys.modules  # nothing imported before the first lookup
    assert sorted(registry) == ["hello", "hi"]
    assert registry["hi"] is registry["hello"] is sys.modules["gs_plugins_test.greetings"].Hello
    with pytest.raises(ConfigError) as info:
        registry.resolve("bye", "things.0.kind")
    assert str(info.value) == "things.0.kind: bad value 'bye'; allowed: ['hello', 'hi']"


def test_register_adds_and_pop_removes_an_outside_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry: Registry[Base] = Registry(plugin_package(tmp_path, monkeypatch), Base, "greeting kind")

    @registry.register
    class Howdy(Base):
        kind = "howdy"

    assert registry.resolve("howdy", "kind") is Howdy and "howdy" in registry
    registry.pop("howdy")
    assert "howdy" not in registry


def test_every_extension_point_uses_a_registry() -> None:
    assert {"openai", "anthropic", "replay"} <= set(PROVIDERS) and PROVIDERS["replay"] is ReplayProvider
    assert {"fixed", "random", "rules", "split", "classifier", "cascade"} <= set(ROUTERS)
    assert ROUTERS["classifier"] is ClassifierRouter  # not MultiClassifierRouter, which shares the kind
    assert STORES["postgres"] is STORES["postgresql"] is PostgresStore and "sqlite" in STORES
    assert {"openai", "sentence-transformers"} <= set(ENCODERS)


def test_store_urls_are_checked_by_scheme() -> None:
    assert check_url("sqlite:///x.db") is None and check_url("postgres://u@h/db") is None
    problem = check_url("mysql://user:secret@h/db")
    assert problem is not None and "store.url" in problem and "sqlite:///PATH" in problem
    assert "secret" not in problem
    assert check_url("sqlite://x.db") is not None  # three slashes: sqlite:///PATH
