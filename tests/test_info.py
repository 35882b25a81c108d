"""`cmi info` on datasets and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.config import compose_train_config
from cmi_cli.training.train import train

runner = CliRunner()


def test_info_on_a_dataset(tiny_project: Path) -> None:
    result = runner.invoke(app, ["info", "data/foodseg103", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["kind"] == "dataset"
    assert record["layout"] == "folder"
    assert record["splits"] == {"test": 4, "train": 12}
    assert record["num_classes"] == 104
    assert record["dvc_md5"] == "untracked"


def test_info_on_a_checkpoint_prints_lineage_and_cost(tiny_project: Path) -> None:
    cfg = compose_train_config(["debug=tiny", "run.name=i"], project_root=tiny_project)
    run = train(cfg, project_root=tiny_project, show_progress=False)
    result = runner.invoke(app, ["info", str(run.best_ckpt), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["kind"] == "checkpoint"
    assert record["model"]["name"] == "fast_unet"
    assert record["model"]["parameters"] > 100_000
    assert record["model"]["gflops@32x32"] > 0
    assert record["classes"]["count"] == 104
    assert record["preprocessing"]["image_size"] == 32
    table = runner.invoke(app, ["info", str(run.best_ckpt)], env={"COLUMNS": "150"})
    assert table.exit_code == 0
    for key in ("model.parameters", "data.dvc_md5", "code.git_commit", "metrics.val/miou"):
        assert key in table.output


def test_info_rejects_unknown_files(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hi")
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 1
    assert "does not know this kind of file" in result.output
