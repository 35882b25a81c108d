"""Shared fixtures: tiny real datasets and projects, made fresh for the tests that need them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sample_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-image, 48 px sample dataset, generated once per session (copy before changing)."""
    from cmi_cli.data.sample import generate_sample

    root = tmp_path_factory.mktemp("sample") / "foodseg103"
    generate_sample(root, images=16, size=48, seed=0, show_progress=False)
    return root


@pytest.fixture
def tiny_project(tmp_path: Path, tiny_sample_master: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the tiny sample at data/foodseg103, made the cwd (not a git/DVC repo)."""
    shutil.copytree(tiny_sample_master, tmp_path / "data" / "foodseg103")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("CMI_RUN_NAME", raising=False)
    return tmp_path
