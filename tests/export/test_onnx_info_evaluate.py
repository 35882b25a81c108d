"""`cmi info` and `cmi evaluate` on an exported ONNX model."""

from __future__ import annotations

import json
from pathlib import Path

from _onnx_project import TrainedProject
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.export.evaluate import evaluate_onnx
from cmi_cli.export.metadata import sha256_file
from cmi_cli.training.evaluate import evaluate_checkpoint

runner = CliRunner()


def test_info_prints_the_onnx_lineage(exported_onnx: Path, trained_project: TrainedProject) -> None:
    result = runner.invoke(app, ["info", str(exported_onnx), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["kind"] == "onnx"
    assert record["model"]["name"] == "fast_unet"
    assert record["classes"]["count"] == 104
    assert record["parent"]["sha256"] == sha256_file(trained_project.ckpt)
    assert record["export"]["opset"] == 17
    assert record["export"]["validation"]["inputs"] == "dataset"
    assert "MB" in record["file_size"]
    assert "'batch', 3, 'height', 'width'" in record["graph"]["inputs"]
    table = runner.invoke(app, ["info", str(exported_onnx)], env={"COLUMNS": "200"})
    assert table.exit_code == 0
    for key in (
        "parent.sha256",
        "export.opset",
        "export.exporter",
        "preprocessing.mean",
        "code.package",
        "metrics.val/miou",
        "file_size",
    ):
        assert key in table.output, key


def test_onnx_scores_match_the_checkpoint(
    exported_onnx: Path, in_project: Path, trained_project: TrainedProject
) -> None:
    onnx_result = evaluate_onnx(exported_onnx, batch_size=3)
    ckpt_result = evaluate_checkpoint(trained_project.ckpt, batch_size=3)
    assert onnx_result.num_images == ckpt_result.num_images == 4
    assert abs(onnx_result.scores.miou - ckpt_result.scores.miou) <= 1e-4
    assert abs(onnx_result.scores.pixel_accuracy - ckpt_result.scores.pixel_accuracy) <= 1e-4

    result = runner.invoke(app, ["evaluate", str(exported_onnx), "--json", "e.json"])
    assert result.exit_code == 0, result.output
    record = json.loads(Path("e.json").read_text())
    assert record["model"] == str(exported_onnx)
    assert abs(record["miou"] - ckpt_result.scores.miou) <= 1e-4


def test_evaluate_rejects_a_broken_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07garbage")
    result = runner.invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 1
    assert "is not a loadable ONNX model" in result.output
