"""Robustness: mIoU under corruptions, the drift check's detection rate, and the card."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from _drift_fixtures import MonitorProject
from PIL import Image
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.monitoring.robustness import (
    RobustnessResult,
    RobustnessRow,
    robustness_card,
    write_robustness,
)


def test_evaluate_with_corruptions(
    monitor_project: MonitorProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    shutil.copytree(monitor_project.run_dir, run)
    monkeypatch.chdir(monitor_project.root)
    r = CliRunner().invoke(
        app, ["evaluate", str(run / "checkpoints" / "best.ckpt"), "--corruptions",
              "brightness,blur", "--severities", "5", "--window", "20"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "brightness" in r.output
    assert "detected" in r.output
    assert {"robustness.png", "robustness_card.md", "robustness.json"} <= {
        p.name for p in run.iterdir()
    }
    result = json.loads((run / "robustness.json").read_text())
    assert result["num_images"] == 40
    assert result["window"] == 20
    clean, rows = result["clean"], {r["corruption"]: r for r in result["rows"]}
    assert clean["detection_rate"] == 0.0  # clean windows raise no alarm
    assert all(0 <= r["miou"] <= 1 and not math.isnan(r["miou"]) for r in rows.values())
    assert rows["brightness"]["detection_rate"] == 1.0
    assert "brightness" in rows["brightness"]["drifted_features"]
    # Blur drifts sharpness, whether or not enough other features follow to flag the window.
    assert "sharpness" in rows["blur"]["drifted_features"]


def test_unknown_corruption_is_refused_before_any_work(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "none.ckpt"), "--corruptions", "fog"])
    assert r.exit_code == 2
    assert "unknown corruption fog" in r.output


def test_card_plot_and_json(tmp_path: Path) -> None:
    clean = RobustnessRow("none", 0, 0.50, 0.8, windows=3, flagged=0, detection_rate=0.0)
    rows = [
        RobustnessRow("blur", 1, 0.48, 0.8, 3, 0, 0.0, []),
        RobustnessRow("blur", 5, 0.20, 0.5, 3, 1, 1 / 3, ["sharpness"]),
        RobustnessRow("brightness", 5, 0.30, 0.6, 3, 3, 1.0, ["brightness", "saturation"]),
    ]
    result = RobustnessResult(tmp_path / "m.onnx", tmp_path, "test", 60, 20, 0.2, clean, rows)
    card = robustness_card(result)
    assert "| blur | 5 | 0.2000 | -0.3000 | 33% | sharpness |" in card
    assert "false-alarm rate on clean windows 0%" in card
    assert "Missed (mIoU down more than 0.05, detected in under half the windows): blur 5." in card
    paths = write_robustness(result, tmp_path / "out")
    assert Image.open(paths["png"]).format == "PNG"
    assert json.loads(paths["json"].read_text())["rows"][2]["drifted_features"][0] == "brightness"


def test_drift_windows_with_a_constant_feature_raise_no_numpy_warnings() -> None:
    """A strong corruption makes a feature constant over a window (every photo saturated):
    Evidently's correlation matrix then divides by a zero deviation, once per window."""
    import warnings

    import numpy as np

    from cmi_cli.monitoring.reference import FeatureTable
    from cmi_cli.monitoring.robustness import _add_detection

    rng = np.random.default_rng(0)
    columns = ["brightness", "contrast", "sharpness"]
    rows = [{c: float(rng.random()) for c in columns} for _ in range(20)]
    reference = FeatureTable(columns, rows)
    saturated = [
        {"brightness": 1.0, "contrast": float(rng.random()), "sharpness": float(rng.random())}
        for _ in range(20)
    ]
    row = RobustnessRow("brightness", 5, 0.1, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _add_detection(row, reference, FeatureTable(columns, saturated), 20, 0.5, 1)
    assert row.windows == 1
    assert "brightness" in row.drifted_features
