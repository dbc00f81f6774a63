"""Shared test set-up: the recorded datasets live beside the repository, never inside it."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GEARSHIFT_DATA") or REPO.parent / "shared" / "datasets")
os.environ.setdefault("GEARSHIFT_DATA", str(DATA))


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """A command run in-process (`serve` under CliRunner) configures logging for the process: undo it,
    so one test's log level and handlers do not leak into the next one's captured records."""
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "routellm").is_dir():
        pytest.fail(f"recorded datasets not found at {DATA}; set GEARSHIFT_DATA to ../shared/datasets")
    return DATA


@pytest.fixture(scope="session")
def postgres():  # type: ignore[no-untyped-def]
    """A real PostgreSQL server for this test session (see pg_server.py)."""
    import shutil
    import tempfile

    from tests.support.pg_server import PostgresServer, server_bin

    bin_dir = server_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found: install Debian's `postgresql` package "
                    "(.ci/run does) to run the PostgreSQL store tests")
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root with no `postgres` system user to run the PostgreSQL server as")
    # Not pytest's tmp_path: its parents are private to this user, and the server may run as another.
    root = Path(tempfile.mkdtemp(prefix="gearshift-pg-"))
    server = PostgresServer(root, bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres, monkeypatch: pytest.MonkeyPatch) -> str:  # type: ignore[no-untyped-def]
    """A fresh database's URL; its password is in $GEARSHIFT_TEST_PGPASSWORD (for `store.password_env`)."""
    monkeypatch.setenv("GEARSHIFT_TEST_PGPASSWORD", postgres.password)
    return str(postgres.create_database())
