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

    # One step again, alone: it takes the latest run's checkpoint and writes its ONNX model.
    latest = max(project.glob("runs/*/checkpoints/best.ckpt"), key=lambda p: p.stat().st_mtime)
    onnx = latest.parent.parent / "model.onnx"
    onnx.unlink()
    alone = CliRunner().invoke(app, ["quickstart", "proj", "--step", "export"])
    assert alone.exit_code == 0, alone.output
    assert onnx.is_file()
    assert ">> export onnx" in alone.output
    assert ">> train" not in alone.output
    assert len(list(project.glob("runs/*/checkpoints/best.ckpt"))) == 2


def test_each_step_is_a_named_function_and_one_runs_alone(workdir: Path) -> None:
    from cmi_cli.errors import UsageError
    from cmi_cli.quickstart import STEP_NAMES, STEPS, run_quickstart

    assert STEP_NAMES[0] == "init"
    assert STEP_NAMES[-1] == "benchmark"
    assert all(fn.__name__.startswith("step_") and fn.__doc__ for _, fn in STEPS)
    with pytest.raises(UsageError, match="no quickstart step 'trian'"):
        run_quickstart(workdir / "p", only=["trian"])
    # Alone in an empty folder, a step that needs a checkpoint says which steps come first.
    result = run_quickstart(workdir / "p", only=["export"], show_progress=False)
    assert [s.name for s in result.steps] == ["export onnx"]
    assert not result.ok
    assert "no checkpoint in" in result.steps[0].detail
    assert "without --step" in result.steps[0].detail


def test_quickstart_reports_a_failing_step_and_exits_1(workdir: Path) -> None:
    result = CliRunner().invoke(
        app, ["quickstart", "proj", *TINY, "-o", "trainer.max_epochz=1"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1
    assert "failed" in result.output
    assert "did you mean 'trainer.max_epochs'" in result.output
    assert "Traceback" not in result.output
