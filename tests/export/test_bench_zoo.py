"""``cmi benchmark --zoo``: one table and one scatter of quality against latency."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from _onnx_project import TrainedProject
from PIL import Image
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.export.bench_zoo import ZooResult, ZooRow, to_markdown, write_zoo

runner = CliRunner()


def test_zoo_report_names_every_row_and_plots_both_precisions(tmp_path: Path) -> None:
    rows = [
        ZooRow(
            "a",
            "a.ckpt",
            "fast_unet (width=16)",
            0.1,
            0.5,
            0.4,
            0.1,
            0.3,
            0.29,
            2.0,
            1.0,
            "validation",
        ),
        ZooRow(
            "b",
            "b.ckpt",
            "mini_unet",
            7.7,
            30.0,
            31.0,
            7.8,
            0.4,
            None,
            20.0,
            None,
            "validation",
            "failed",
            "onnx-int8: quantization failed",
        ),
    ]
    zoo = ZooResult(rows, 256, {"cpu": "test cpu", "logical_cpus": 2}, tmp_path)
    files = write_zoo(zoo)
    assert [f.name for f in files] == ["zoo.csv", "zoo.md", "zoo.json", "zoo.png"]
    text = to_markdown(zoo)
    assert "| a | fast_unet (width=16) | 0.1 | 0.5 |" in text
    assert "| b | mini_unet | 7.70 | 30.00 | 31.00 | 7.80 | 0.4 | - | 20.00 | - |" in text
    assert "256x256, batch 1" in text
    assert "validation split" in text
    assert "- b: onnx-int8: quantization failed" in text
    with (tmp_path / "zoo.csv").open() as fh:
        assert [r["name"] for r in csv.DictReader(fh)] == ["a", "b"]
    with Image.open(tmp_path / "zoo.png") as img:
        assert img.format == "PNG"
        assert img.size[0] > 400


def test_zoo_needs_existing_checkpoints(tmp_path: Path) -> None:
    result = runner.invoke(app, ["benchmark", "--zoo", str(tmp_path / "missing.ckpt")])
    assert result.exit_code == 2
    assert "checkpoint not found" in result.output
    one = runner.invoke(app, ["benchmark", str(tmp_path / "a.ckpt"), str(tmp_path / "b.ckpt")])
    assert one.exit_code == 2
    assert "--zoo" in one.output


@pytest.mark.slow
def test_zoo_of_two_tiny_checkpoints(
    trained_project: TrainedProject, in_project: Path, tmp_path: Path
) -> None:
    from cmi_cli.config import compose_train_config
    from cmi_cli.training.train import train

    # A second, narrower fast_unet. (mini_unet, the original project's baseline, fails the
    # export's absolute logit tolerance at 32 px; the zoo would list it as failed.)
    overrides = ["debug=tiny", "run.name=narrow", "model.params.width=4", "optim.warmup_epochs=0"]
    cfg = compose_train_config(overrides, project_root=in_project)
    narrow = train(cfg, project_root=in_project, show_progress=False).best_ckpt
    assert narrow is not None
    out = tmp_path / "zoo"
    result = runner.invoke(
        app,
        [
            "benchmark",
            "--zoo",
            str(trained_project.ckpt),
            str(narrow),
            "--size",
            "32",
            "--repeats",
            "2",
            "--out",
            str(out),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "zoo.json").read_text())
    rows = {r["name"]: r for r in record["rows"]}
    assert set(rows) == {"t", "narrow"}
    assert "width=16" in rows["t"]["architecture"]
    assert "width=4" in rows["narrow"]["architecture"]
    # A quarter of the width: about a sixteenth of the weights and the multiply-adds.
    assert rows["t"]["params_m"] > 8 * rows["narrow"]["params_m"]
    assert rows["t"]["gflops"] > 4 * rows["narrow"]["gflops"] > 0
    for row in rows.values():
        assert row["status"] == "ok", row["detail"]
        assert 0 <= row["miou_fp32"] <= 1
        assert 0 <= row["miou_int8"] <= 1
        assert row["fp32_ms"] > 0
        assert row["int8_ms"] > 0
        assert row["int8_mb"] < row["fp32_mb"]
        assert row["split"]
    assert "| narrow | fast_unet (depth=3, upsample=bilinear, width=4) |" in result.output
    assert (out / "zoo.png").stat().st_size > 1000
