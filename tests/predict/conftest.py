"""Fixtures for the ``cmi predict`` tests: a hand-made colour model, photos, a trained run."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from _predict_models import colour_model


@dataclass(frozen=True)
class TinyRun:
    """A checkpoint trained with ``debug=tiny`` and its ONNX export."""

    root: Path
    ckpt: Path
    onnx: Path


@pytest.fixture(scope="session")
def colour_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 1x1-conv colour model at 32 px (read-only)."""
    return colour_model(tmp_path_factory.mktemp("colour") / "colour.onnx")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_sample_master: Path) -> TinyRun:
    """Train ``debug=tiny`` for one epoch and export it, once per session (read-only)."""
    from cmi_cli.config import compose_train_config
    from cmi_cli.export.onnx_export import export_onnx
    from cmi_cli.training.train import train

    root = tmp_path_factory.mktemp("predict_project")
    shutil.copytree(tiny_sample_master, root / "data" / "foodseg103")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("WANDB_MODE", "disabled")
        mp.delenv("CMI_RUN_NAME", raising=False)
        cfg = compose_train_config(["debug=tiny", "run.name=p"], project_root=root)
        ckpt = train(cfg, project_root=root, show_progress=False).best_ckpt
        assert ckpt is not None
        onnx_path = export_onnx(ckpt, num_images=1).path
    return TinyRun(root, ckpt, onnx_path)
