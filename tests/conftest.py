"""Shared test set-up: the recorded datasets live beside the repository, never inside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GEARSHIFT_DATA") or REPO.parent / "shared" / "datasets")
os.environ.setdefault("GEARSHIFT_DATA", str(DATA))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "routellm").is_dir():
        pytest.fail(f"recorded datasets not found at {DATA}; set GEARSHIFT_DATA to ../shared/datasets")
    return DATA
