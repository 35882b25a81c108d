"""A training mask with a class id outside 0..C-1 is named, with its label and the fix."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch  # noqa: F401 - its log handler must bind to pytest's stderr, not a runner's
import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cmi_cli.cli.app import app

TINY = ["debug=tiny", "data.limit=null", "data.image_size=32", "trainer.max_epochs=1"]


def test_out_of_range_training_label_names_file_and_label(tiny_project: Path) -> None:
    ann = tiny_project / "data" / "foodseg103" / "Images" / "ann_dir" / "train"
    masks = sorted(ann.glob("*.png"))
    bad = masks[len(masks) // 2]
    arr = np.array(Image.open(bad))
    arr[: arr.shape[0] // 2] = 150  # half the mask: survives the resize to 32 px
    Image.fromarray(arr).save(bad)

    result = CliRunner().invoke(app, ["-q", "train", *TINY, "run.name=bad"], env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "IndexError" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert f"Images/ann_dir/train/{bad.name}" in result.output
    assert "label 150" in result.output
    assert "0..103" in result.output
    assert "cmi data validate" in result.output
