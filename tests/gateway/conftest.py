"""Fixtures the gateway tests share: a fake upstream serving every model the configs name, and its key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_upstream import FakeUpstream


@pytest.fixture
def upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The upstream key the test configs name (`GS_TEST_UPSTREAM_KEY`), set for one test."""
    monkeypatch.setenv("GS_TEST_UPSTREAM_KEY", "sk-upstream-key")


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream.running(models=("fake-small", "fake-large", "fake-claude")) as up:
        yield up
