"""`cmi quickstart`: the integration test of the whole chain, on tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmi_cli.cli.app import app

TINY = ["--images", "12", "--size", "48", "-o", "trainer.max_epochs=1", "-o", "data.image_size=32"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("CMI_RUN_NAME", raising=False)
    return tmp_path


def test_quickstart_runs_every_stage_and_summarises(workdir: Path) -> None:
    result = CliRunner().invoke(app, ["quickstart", "proj", *TINY], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for step in ("init", "data pull", "validate", "stats", "train", "evaluate"):
        assert step in result.output
    assert "│ failed" not in result.output  # no step of the summary table failed
    project = workdir / "proj"
    assert (project / ".dvc").is_dir()
    assert (project / "data" / "foodseg103.dvc").is_file()
    assert (project / "reports" / "quickstart" / "class_shares.png").is_file()
    (ckpt,) = project.glob("runs/*/checkpoints/best.ckpt")
    assert f"cmi info {ckpt}" in result.output.replace("\n", "")
    (report,) = project.glob("runs/*/eval-best-test.json")
    assert json.loads(report.read_text())["split"] == "test"

    again = CliRunner().invoke(app, ["quickstart", "proj", *TINY], env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert "reused the existing project" in again.output
    assert len(list(project.glob("runs/*/checkpoints/best.ckpt"))) == 2


def test_quickstart_reports_a_failing_step_and_exits_1(workdir: Path) -> None:
    result = CliRunner().invoke(
        app, ["quickstart", "proj", *TINY, "-o", "trainer.max_epochz=1"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1
    assert "failed" in result.output
    assert "did you mean 'trainer.max_epochs'" in result.output
    assert "Traceback" not in result.output
