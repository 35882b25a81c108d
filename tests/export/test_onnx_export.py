"""``cmi export onnx``: a validated, dynamic ONNX model from a checkpoint, or no file at all."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _onnx_project import TrainedProject
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.errors import UsageError
from cmi_cli.export.errors import ArgmaxAgreementError, AtolError, OnnxValidationError
from cmi_cli.export.metadata import sha256_file
from cmi_cli.export.onnx_export import DEFAULT_OPSET, default_onnx_path, export_onnx
from cmi_cli.export.ort_predict import OnnxPredictor

runner = CliRunner()


def _dims(value_info: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".onnx" or p.name.startswith("."))


def test_default_out_is_the_run_folder_or_beside_the_checkpoint(tmp_path: Path) -> None:
    assert default_onnx_path(tmp_path / "r" / "checkpoints" / "best.ckpt") == tmp_path / "r" / (
        "model.onnx"
    )
    assert default_onnx_path(tmp_path / "pruned.ckpt") == tmp_path / "pruned.onnx"


def test_export_is_dynamic_torchscript_and_matches_pytorch(
    exported_onnx: Path, trained_project: TrainedProject
) -> None:
    assert exported_onnx == trained_project.ckpt.parent.parent / "model.onnx"
    model = onnx.load(str(exported_onnx))
    # The TorchScript exporter ran without onnxscript (the dynamo exporter would import it).
    assert "onnxscript" not in sys.modules
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [DEFAULT_OPSET]
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert _dims(model.graph.input[0]) == ["batch", 3, "height", "width"]
    assert _dims(model.graph.output[0]) == ["batch", 104, "height", "width"]
    validation = OnnxPredictor(exported_onnx).lineage["export"]["validation"]
    assert validation["inputs"] == "dataset"
    assert validation["max_abs_diff"] <= 1e-4
    assert validation["argmax_agreement"] >= 0.999
    assert set(validation["checks"].values()) == {"pass"}
    assert {"dynamic batch 2", "dynamic size 67x45"} <= set(validation["checks"])
    assert _leftovers(exported_onnx.parent) == ["model.onnx"]


def test_exported_model_runs_any_batch_and_size_like_pytorch(
    exported_onnx: Path, trained_project: TrainedProject
) -> None:
    from cmi_cli.training.checkpoint import load_model

    net, _ = load_model(trained_project.ckpt)
    predictor = OnnxPredictor(exported_onnx, threads=1)
    batch = np.random.default_rng(1).standard_normal((3, 3, 29, 51), dtype=np.float32)
    got = predictor.predict(batch)
    with torch.inference_mode():
        want = net(torch.from_numpy(batch)).numpy()
    assert got.shape == (3, 104, 29, 51)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_static_export_has_fixed_shape(static_onnx: Path) -> None:
    model = onnx.load(str(static_onnx))
    assert _dims(model.graph.input[0]) == [1, 3, 40, 24]
    assert _dims(model.graph.output[0]) == [1, 104, 40, 24]
    predictor = OnnxPredictor(static_onnx)
    export = predictor.lineage["export"]
    assert export["dynamic_axes"] is None
    assert not any(name.startswith("dynamic") for name in export["validation"]["checks"])
    assert predictor.predict(np.zeros((1, 3, 40, 24), np.float32)).shape == (1, 104, 40, 24)
    with pytest.raises(UsageError, match="static model"):
        predictor.predict(np.zeros((1, 3, 32, 32), np.float32))


def test_cli_export_prints_checklist_and_warns_without_data(
    tmp_path: Path, in_project: Path, trained_project: TrainedProject
) -> None:
    out = tmp_path / "cli" / "m.onnx"
    args = ["export", "onnx", str(trained_project.ckpt), "-o", str(out), "--opset", "18"]
    result = runner.invoke(app, [*args, "--data", "nowhere"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for row in ("onnx.checker", "logits vs PyTorch", "dynamic size 67x45", "wrote"):
        assert row in result.output
    assert "✗" not in result.output
    # Without the dataset, random tensors stand in, and both the log and the checklist say so.
    assert "warning: ONNX validation compares on random tensors" in result.output
    assert "random tensors (dataset folder nowhere does not exist" in result.output
    assert OnnxPredictor(out).lineage["export"]["validation"]["inputs"] == "random"
    assert onnx.load(str(out)).opset_import[0].version == 18
    assert _leftovers(out.parent) == ["m.onnx"]


def test_failed_validation_collects_every_error_and_writes_nothing(
    tmp_path: Path,
    in_project: Path,
    trained_project: TrainedProject,
    exported_onnx: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cmi_cli.export import validate_onnx

    real = validate_onnx.torch_logits
    # A reference that disagrees everywhere: values off and the argmax moved.
    monkeypatch.setattr(validate_onnx, "torch_logits", lambda model, batch: -real(model, batch))
    out = tmp_path / "bad.onnx"
    with pytest.raises(OnnxValidationError) as info:
        export_onnx(trained_project.ckpt, out, num_images=2)
    kinds = {type(e) for e in info.value.report.failures}
    assert kinds == {AtolError, ArgmaxAgreementError}
    assert len(info.value.report.failures) == 6  # logits, batch 2, odd size: each twice
    assert not out.exists()
    assert _leftovers(tmp_path) == []

    # Given the run folder, the target is its model.onnx: a failed export must not touch it.
    run_dir = trained_project.ckpt.parent.parent
    before = sha256_file(exported_onnx)
    args = ["export", "onnx", str(run_dir), "--images", "1"]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "✗" in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: ONNX validation failed (6 of 11 checks): AtolError: max |diff|")
    assert "ArgmaxAgreementError" in result.output
    assert sha256_file(exported_onnx) == before
    assert _leftovers(run_dir) == ["model.onnx"]


def _edit_model(src: Path, dst: Path, params: dict | None) -> None:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt["cmi_lineage"]["model"]["name"] = "mini_unet"
    if params is not None:
        ckpt["cmi_lineage"]["model"]["params"] = params
    torch.save(ckpt, dst)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (None, "checkpoint not found"),
        (lambda src, dst: dst.write_text("not a checkpoint"), "is not a loadable checkpoint"),
        (
            lambda src, dst: dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2]),
            "is not a checkpoint or is truncated",
        ),
        (lambda src, dst: _edit_model(src, dst, {}), "do not fit architecture 'mini_unet'"),
        (
            lambda src, dst: _edit_model(src, dst, None),
            "records a model that cannot be built (Unknown parameter 'width'",
        ),
    ],
    ids=["missing", "not-a-checkpoint", "truncated", "other-architecture", "foreign-params"],
)
def test_bad_checkpoints_fail_in_one_line_and_leave_nothing(
    tmp_path: Path,
    trained_project: TrainedProject,
    make: Callable[[Path, Path], object] | None,
    message: str,
) -> None:
    ckpt = tmp_path / "bad.ckpt"
    if make is not None:
        make(trained_project.ckpt, ckpt)
    result = runner.invoke(app, ["export", "onnx", str(ckpt)], env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    assert message in lines[0]
    assert _leftovers(tmp_path) == []


def test_bad_options_are_usage_errors(tmp_path: Path, trained_project: TrainedProject) -> None:
    result = runner.invoke(app, ["export", "onnx", str(trained_project.ckpt), "--opset", "25"])
    assert result.exit_code == 2
    assert "--opset 25 is outside 11..20" in result.output
    copy = tmp_path / "c.ckpt"
    shutil.copy(trained_project.ckpt, copy)
    with pytest.raises(UsageError, match="overwrite the checkpoint"):
        export_onnx(copy, copy)
