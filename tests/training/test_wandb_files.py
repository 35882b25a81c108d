"""W&B offline keeps every file of a run under the run folder, none in the user's home."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch  # noqa: F401 - its log handler must bind to pytest's stderr, not a runner's
import pytest
from typer.testing import CliRunner

from cmi_cli.cli.app import app

TINY = ["debug=tiny", "data.limit=null", "data.image_size=32", "early_stopping.patience=0"]


def test_wandb_staging_files_stay_in_the_run_folder(
    tiny_project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    result = CliRunner().invoke(
        app, ["-q", "train", *TINY, "trainer.max_epochs=1", "logger=wandb", "run.name=wbfiles"]
    )
    assert result.exit_code == 0, result.output
    import wandb

    wandb.teardown()
    outside = [p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file()]
    assert outside == [], f"W&B wrote outside the run folder: {outside}"
    run_dir = tiny_project / "runs" / "wbfiles"
    staged = [p for p in run_dir.rglob("*") if p.is_file() and "staging" in p.parts]
    # The offline run's model artifact still has its files, for a later `wandb sync`.
    assert staged, "the model artifact's staged files should be kept with the run"
