"""The reference travels with the model: saved by training, copied and named by the export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _drift_fixtures import MonitorProject

from cmi_cli.errors import ArtifactError, DataError
from cmi_cli.export.metadata import read_lineage, sha256_file
from cmi_cli.monitoring.model_reference import reference_path_for
from cmi_cli.monitoring.reference import (
    IMAGE_COLUMNS,
    PREDICTION_COLUMNS,
    FeatureTable,
    load_table,
    save_table,
    table_from_log,
)


def test_training_saves_the_reference_with_predictions(monitor_project: MonitorProject) -> None:
    path = monitor_project.run_dir / "reference.csv"
    table = load_table(path)
    assert len(table) == 40  # the whole test split, not data.limit's handful
    assert table.columns[: len(IMAGE_COLUMNS)] == list(IMAGE_COLUMNS)
    assert set(PREDICTION_COLUMNS) <= set(table.columns)
    assert 1 <= len(table.share_classes) <= 5
    assert all(0 < r["mean_confidence"] <= 1 for r in table.rows)
    record = json.loads((monitor_project.run_dir / "metrics.json").read_text())["reference"]
    assert record["file"] == "reference.csv"
    assert record["rows"] == 40
    assert record["sha256"] == sha256_file(path)
    assert reference_path_for(monitor_project.ckpt) == path
    assert reference_path_for(monitor_project.run_dir) == path


def test_export_copies_the_reference_and_names_it(
    monitor_project: MonitorProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cmi_cli.export.onnx_export import export_onnx

    monkeypatch.chdir(monitor_project.root)
    onnx_path = export_onnx(monitor_project.ckpt, tmp_path / "food.onnx", num_images=1).path
    beside = tmp_path / "food.reference.csv"
    assert beside.read_bytes() == (monitor_project.run_dir / "reference.csv").read_bytes()
    record = read_lineage(onnx_path)["reference"]
    assert record["file"] == "food.reference.csv"
    assert record["rows"] == 40
    assert record["sha256"] == sha256_file(beside)
    assert reference_path_for(onnx_path) == beside


def test_a_checkpoint_without_reference_gets_one_at_export(
    monitor_project: MonitorProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cmi_cli.export.onnx_export import export_onnx

    lone = tmp_path / "lone.ckpt"
    shutil.copy(monitor_project.ckpt, lone)
    with pytest.raises(ArtifactError, match="no reference features"):
        reference_path_for(lone)
    monkeypatch.chdir(monitor_project.root)
    onnx_path = export_onnx(lone, tmp_path / "lone.onnx", num_images=1).path
    table = load_table(tmp_path / "lone.reference.csv")
    assert len(table) == 40
    assert table.has_predictions
    assert read_lineage(onnx_path)["reference"]["rows"] == 40


def test_csv_round_trip_is_exact(tmp_path: Path) -> None:
    table = FeatureTable(["brightness", "share_ice cream"], [{"brightness": 0.1 + 0.2,
                         "share_ice cream": 1 / 3}])  # fmt: skip
    again = load_table(save_table(table, tmp_path / "t.csv"))
    assert again.rows == table.rows
    assert again.columns == table.columns
    assert again.share_classes == ["ice cream"]


def test_a_log_record_becomes_a_row_with_the_reference_classes() -> None:
    record = {
        "image_features": dict.fromkeys(IMAGE_COLUMNS, 1.0), "mean_confidence": 0.9,
        "p10_confidence": 0.5, "mean_entropy": 0.3,
        "class_shares": {"background": 0.6, "rice": 0.4},
    }  # fmt: skip
    table = table_from_log([record], ["rice", "bread"])
    row = table.rows[0]
    assert row["share_rice"] == 0.4
    assert row["share_bread"] == 0.0
    assert row["num_classes_present"] == 2.0
    with pytest.raises(DataError, match="record 0"):
        table_from_log([{"image_features": {}}], [])


def test_drift_check_against_a_run_uses_its_model_for_predictions(
    monitor_project: MonitorProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cmi_cli.cli.app import app

    monkeypatch.chdir(monitor_project.root)
    out = tmp_path / "drift"
    r = CliRunner().invoke(app, ["drift-check", "-r", str(monitor_project.run_dir), "-c",
                                 "data/foodseg103", "--split", "test", "--out", str(out),
                                 "--fail-on-drift"])  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "report.json").read_text())
    compared = {f["feature"] for f in summary["features"]}
    assert {"mean_confidence", "mean_entropy", "brightness"} <= compared
    assert summary["share"] == 0.0  # the very photos of the reference, through the same model
