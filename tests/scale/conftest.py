"""Session-wide real servers for the scale-path tests (see servers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _scale_servers import GcsEmulator, Postgres, gcs_emulator, postgres_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server on 127.0.0.1 for the whole session."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """A GCS emulator on 127.0.0.1 for the whole session (bucket ``bucket``)."""
    with gcs_emulator(tmp_path_factory.mktemp("gcs")) as server:
        yield server
