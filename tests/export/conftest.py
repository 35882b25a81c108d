"""Fixtures for the export tests: one tiny trained checkpoint and its ONNX export per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _onnx_project import TrainedProject


@pytest.fixture(scope="session")
def trained_project(
    tmp_path_factory: pytest.TempPathFactory, tiny_sample_master: Path
) -> TrainedProject:
    """A project with runs/t/checkpoints/best.ckpt trained with ``debug=tiny`` (read-only)."""
    from cmi_cli.config import compose_train_config
    from cmi_cli.training.train import train

    root = tmp_path_factory.mktemp("export_project")
    shutil.copytree(tiny_sample_master, root / "data" / "foodseg103")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("WANDB_MODE", "disabled")
        mp.delenv("CMI_RUN_NAME", raising=False)
        # One epoch leaves no room for learning-rate warm-up, whatever train.yaml's default.
        overrides = ["debug=tiny", "run.name=t", "optim.warmup_epochs=0"]
        cfg = compose_train_config(overrides, project_root=root)
        result = train(cfg, project_root=root, show_progress=False)
    assert result.best_ckpt is not None
    return TrainedProject(root, result.best_ckpt)


@pytest.fixture(scope="session")
def exported_onnx(trained_project: TrainedProject) -> Path:
    """The dynamic ONNX export of the trained checkpoint at runs/t/model.onnx (read-only)."""
    from cmi_cli.export.onnx_export import export_onnx

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(trained_project.root)
        return export_onnx(trained_project.ckpt).path


@pytest.fixture
def in_project(trained_project: TrainedProject, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the trained project the cwd (its lineage records data/foodseg103 relative to it)."""
    monkeypatch.chdir(trained_project.root)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    return trained_project.root


@pytest.fixture(scope="session")
def static_onnx(trained_project: TrainedProject, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static export of the trained checkpoint with input [1, 3, 40, 24] (read-only)."""
    from cmi_cli.export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("static") / "static.onnx"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(trained_project.root)
        return export_onnx(trained_project.ckpt, out, dynamic=False, height=40, width=24).path
