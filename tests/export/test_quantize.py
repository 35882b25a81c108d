"""``cmi quantize``: int8 ONNX with its parent and measured delta, or a file named REJECTED."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from _onnx_project import TrainedProject
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.errors import UsageError
from cmi_cli.export.metadata import read_lineage, sha256_file
from cmi_cli.export.quantize import (
    QuantizeResult,
    QuantizeSettings,
    default_int8_path,
    quantize_onnx,
    rejected_path,
)

runner = CliRunner()


@pytest.fixture
def fp32(exported_onnx: Path, in_project: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny fp32 export, with the project as the cwd."""
    return Path(shutil.copy(exported_onnx, tmp_path / "model.onnx"))


@pytest.fixture(scope="module")
def static_int8(
    exported_onnx: Path, trained_project: TrainedProject, tmp_path_factory: pytest.TempPathFactory
) -> QuantizeResult:
    """Static QDQ int8 of the tiny export with the default settings (read-only)."""
    folder = tmp_path_factory.mktemp("int8")
    model = Path(shutil.copy(exported_onnx, folder / "model.onnx"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(trained_project.root)
        return quantize_onnx(model, settings=QuantizeSettings(calib_size=6), max_miou_drop=1.0)


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_names() -> None:
    assert default_int8_path(Path("r/model.onnx")) == Path("r/model.int8.onnx")
    assert rejected_path(Path("r/model.int8.onnx")) == Path("r/model.int8.REJECTED.onnx")


def test_static_qdq_records_parent_settings_and_delta(static_int8: QuantizeResult) -> None:
    path = static_int8.path
    assert path.name == "model.int8.onnx"
    assert static_int8.accepted
    ops = _ops(path)
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # QDQ format
    lineage = read_lineage(path)
    assert lineage["kind"] == "onnx-int8"
    assert lineage["parent"]["kind"] == "onnx"
    assert lineage["parent"]["sha256"] == sha256_file(static_int8.parent)
    q = lineage["quantization"]
    assert (q["mode"], q["activation_type"], q["weight_type"]) == ("static", "uint8", "int8")
    assert q["calibration_images"] == 6
    delta = q["delta"]
    assert delta["miou_fp32"] == pytest.approx(static_int8.fp32.miou, abs=1e-6)
    assert delta["miou_drop"] == pytest.approx(static_int8.miou_drop, abs=1e-6)
    assert 0.5 < delta["pixel_agreement"] <= 1.0
    assert delta["size_ratio"] > 3  # weights 4 bytes -> 1 byte
    assert static_int8.int8.size_mb < static_int8.fp32.size_mb / 3
    # The serving predictor opens it like any cmi ONNX model.
    from cmi_cli.export.ort_predict import OnnxPredictor

    logits = OnnxPredictor(path).predict(np.zeros((2, 3, 24, 40), np.float32))
    assert logits.shape == (2, 104, 24, 40)


def test_cli_rejects_a_drop_beyond_the_limit_and_names_the_file(fp32: Path) -> None:
    result = runner.invoke(
        app, ["quantize", str(fp32), "--calib-size", "4", "--max-miou-drop", "-1"]
    )
    assert result.exit_code == 1, result.output
    for word in ("size MB", "latency", "mIoU", "pixel agreement"):
        assert word in result.output
    assert "REJECTED" in result.output.strip().splitlines()[-1]
    assert (fp32.parent / "model.int8.REJECTED.onnx").is_file()
    assert not (fp32.parent / "model.int8.onnx").exists()
    lineage = read_lineage(fp32.parent / "model.int8.REJECTED.onnx")
    assert lineage["quantization"]["delta"]["accepted"] is False
    assert sorted(p.name for p in fp32.parent.iterdir()) == [
        "model.int8.REJECTED.onnx",
        "model.onnx",
    ]


def test_dynamic_mode_and_per_channel(fp32: Path) -> None:
    result = quantize_onnx(
        fp32, settings=QuantizeSettings(mode="dynamic", per_channel=True), max_miou_drop=1.0
    )
    assert result.path == fp32.parent / "model.int8.onnx"
    assert "ConvInteger" in _ops(result.path) or "DynamicQuantizeLinear" in _ops(result.path)
    q = read_lineage(result.path)["quantization"]
    assert (q["mode"], q["per_channel"], q["calibration_images"]) == ("dynamic", True, 0)


def test_an_int8_model_is_not_quantized_again(
    static_int8: QuantizeResult, in_project: Path
) -> None:
    with pytest.raises(UsageError, match="onnx-int8"):
        quantize_onnx(static_int8.path)


def test_bad_inputs_fail_in_one_line_and_leave_nothing(
    trained_project: TrainedProject, fp32: Path, tmp_path: Path
) -> None:
    good = fp32.read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "text.onnx").write_text("not a model\n")
    (bad / "truncated.onnx").write_bytes(good[: len(good) // 2])
    shutil.copy(trained_project.ckpt, bad / "best.ckpt")
    cases = {
        "missing.onnx": "not found",
        "text.onnx": "not a loadable ONNX",
        "truncated.onnx": "not a loadable ONNX",
        "best.ckpt": "not a loadable ONNX",
    }
    for name, words in cases.items():
        result = runner.invoke(app, ["quantize", str(bad / name)])
        assert result.exit_code == 1, (name, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, (name, result.output)
        assert words in lines[0], (name, lines[0])
    assert sorted(p.name for p in bad.iterdir()) == ["best.ckpt", "text.onnx", "truncated.onnx"]
    wrong = runner.invoke(app, ["quantize", str(fp32), "--calib-method", "median"])
    assert wrong.exit_code == 2
    assert "--calib-method" in wrong.output
    assert sorted(p.name for p in fp32.parent.iterdir() if p.suffix == ".onnx") == ["model.onnx"]
