"""The presets a user picks by name are listed by `cmi info --models` and `cmi train --help`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cmi_cli.cli.app import app

runner = CliRunner()
MODEL_DIR = Path(__file__).resolve().parents[2] / "configs" / "model"
ZOO = {"mobile": "FPN", "cnn": "UPerNet", "transformer": "Segformer", "smp": "Unet"}


def test_info_models_lists_every_preset_with_its_settings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    # A project's own preset joins the packaged ones.
    (tmp_path / "configs" / "model").mkdir(parents=True)
    (tmp_path / "configs" / "model" / "mine.yaml").write_text(
        "# My phone model.\ndefaults:\n  - mobile\n  - _self_\n\n"
        "encoder: tu-mobilenetv3_small_100\n"
    )
    result = runner.invoke(app, ["info", "--models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["preset"]: row for row in json.loads(result.output)}
    assert set(rows) == {p.stem for p in MODEL_DIR.glob("*.yaml")} | {"mine"}
    for preset, arch in ZOO.items():
        assert rows[preset]["architecture"] == arch
        assert rows[preset]["weights"] == "imagenet"
    assert rows["mine"]["architecture"] == "FPN"
    assert rows["mine"]["encoder"] == "tu-mobilenetv3_small_100"
    assert rows["mine"]["description"] == "My phone model."
    assert rows["fast_unet"]["encoder"] is None

    table = runner.invoke(app, ["info", "--models"], env={"COLUMNS": "200"})
    assert table.exit_code == 0
    for preset in rows:
        assert preset in table.output


def test_train_help_names_every_packaged_preset() -> None:
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for path in MODEL_DIR.glob("*.yaml"):
        assert path.stem in result.output
    assert "resolution=256px" in result.output
    assert "cmi info --models" in result.output


def test_info_needs_a_path_or_models() -> None:
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 2
    assert "--models" in result.output


def test_listing_presets_imports_no_torch() -> None:
    code = (
        "import sys; from cmi_cli.models.presets import model_presets; model_presets();"
        "print(sorted(m for m in ('torch', 'timm', 'segmentation_models_pytorch') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
