"""Session-wide real servers for the scale-path tests (see servers.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_sample_master: Path) -> Path:
    """A project with a ``debug=tiny`` run ``runs/served*`` of the tiny sample."""
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(tiny_sample_master, root / "data" / "foodseg103")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    subprocess.run(
        [sys.executable, "-m", "cmi_cli", "train", "debug=tiny", "run.name=served"],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return root
