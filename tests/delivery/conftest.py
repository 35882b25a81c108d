"""Fixtures for the delivery tests: the repository root and one tiny exported ONNX model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root folder (where the Dockerfile and deploy/ are)."""
    return REPO


@pytest.fixture(scope="session")
def delivery_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_sample_master: Path
) -> tuple[Path, Path]:
    """A `debug=tiny` model trained for one epoch, once per session: (checkpoint, project)."""
    from cmi_cli.config import compose_train_config
    from cmi_cli.training.train import train

    root = tmp_path_factory.mktemp("delivery_project")
    shutil.copytree(tiny_sample_master, root / "data" / "foodseg103")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("WANDB_MODE", "disabled")
        mp.delenv("CMI_RUN_NAME", raising=False)
        cfg = compose_train_config(
            ["debug=tiny", "run.name=d", "optim.warmup_epochs=0"], project_root=root
        )
        ckpt = train(cfg, project_root=root, show_progress=False).best_ckpt
        assert ckpt is not None
        return ckpt, root


@pytest.fixture(scope="session")
def delivery_onnx(delivery_checkpoint: tuple[Path, Path]) -> Path:
    """That model exported to ONNX, once per session."""
    from cmi_cli.export.onnx_export import export_onnx

    ckpt, root = delivery_checkpoint
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        return export_onnx(ckpt, root / "models" / "model.onnx", num_images=1).path
