"""Fixtures for the monitoring tests: samples from two seeds, a shifted copy, a tiny model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from _drift_fixtures import DriftData, MonitorProject
from PIL import Image


def _rewrite_photos(root: Path, fn: object) -> None:
    for path in sorted((root / "Images" / "img_dir").rglob("*.jpg")):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        Image.fromarray(fn(rgb)).save(path, quality=95)  # type: ignore[operator]


@pytest.fixture(scope="session")
def drift_data(tmp_path_factory: pytest.TempPathFactory) -> DriftData:
    """Generate the samples once per session (read-only)."""
    from PIL import ImageFilter

    from cmi_cli.data.sample import generate_sample

    base = tmp_path_factory.mktemp("drift_data")
    for name, seed in (("reference", 0), ("same", 1)):
        generate_sample(
            base / name, images=80, size=48, seed=seed, test_fraction=0.5, show_progress=False
        )
    shutil.copytree(base / "same", base / "bright")
    _rewrite_photos(
        base / "bright", lambda x: np.clip(x.astype(np.int16) + 60, 0, 255).astype(np.uint8)
    )
    shutil.copytree(base / "same", base / "blurred")
    _rewrite_photos(
        base / "blurred",
        lambda x: np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(1.5))),
    )
    return DriftData(base / "reference", base / "same", base / "bright", base / "blurred")


@pytest.fixture(scope="session")
def reference_csv(drift_data: DriftData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Image features of the reference sample's test split, saved as a reference CSV."""
    from cmi_cli.monitoring.reference import compute_features, save_table

    table = compute_features(drift_data.reference, "test", show_progress=False)
    return save_table(table, tmp_path_factory.mktemp("ref") / "reference.csv")


@pytest.fixture(scope="session")
def monitor_project(
    tmp_path_factory: pytest.TempPathFactory, drift_data: DriftData
) -> MonitorProject:
    """Train once per session on all 40 training photos (so the reference has 40 rows)."""
    from cmi_cli.config import compose_train_config
    from cmi_cli.training.train import train

    root = tmp_path_factory.mktemp("monitor_project")
    shutil.copytree(drift_data.reference, root / "data" / "foodseg103")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("WANDB_MODE", "disabled")
        mp.delenv("CMI_RUN_NAME", raising=False)
        overrides = ["debug=tiny", "run.name=m", "data.limit=null"]
        result = train(compose_train_config(overrides, project_root=root), project_root=root,
                       show_progress=False)  # fmt: skip
    assert result.best_ckpt is not None
    return MonitorProject(root, result.best_ckpt, result.run_dir)
