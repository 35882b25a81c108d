"""``cmi prune``: channel pruning that reloads, evaluates and exports from the unchanged class."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from _onnx_project import TrainedProject
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.export.metadata import sha256_file
from cmi_cli.export.prune import PruneResult, default_pruned_path, prune_channels, prune_checkpoint
from cmi_cli.models.complexity import count_parameters
from cmi_cli.models.registry import build_from_spec, build_model, model_spec
from cmi_cli.training.checkpoint import load_model

runner = CliRunner()


@pytest.fixture(scope="module")
def pruned(
    trained_project: TrainedProject, tmp_path_factory: pytest.TempPathFactory
) -> PruneResult:
    """The tiny checkpoint pruned by half with one epoch of fine-tuning (read-only)."""
    out = tmp_path_factory.mktemp("pruned") / "pruned.ckpt"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(trained_project.root)
        mp.setenv("WANDB_MODE", "disabled")
        return prune_checkpoint(
            trained_project.ckpt, 0.5, finetune_epochs=1, out=out, show_progress=False
        )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("name", ["fast_unet", "mini_unet"])
def test_pruned_spec_rebuilds_the_same_network_from_the_unchanged_class(name: str) -> None:
    model = build_model(name, 5).eval()
    before = count_parameters(model)
    prune_channels(model, 0.5, example_size=32)
    spec = model_spec(model)
    assert spec["pruned"], "the pruned layer sizes are part of the spec"
    rebuilt = build_from_spec(spec).eval()
    rebuilt.load_state_dict(model.state_dict())  # strict: every shape fits
    x = torch.randn(2, 3, 40, 24)
    with torch.inference_mode():
        assert torch.allclose(rebuilt(x), model(x), atol=1e-5)
    # Halving every width leaves about a quarter of the parameters; the head stays whole.
    assert count_parameters(rebuilt) < 0.3 * before
    assert model_spec(rebuilt) == spec
    head = [m for m in rebuilt.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert head.out_channels == 5


def test_a_shape_record_of_another_architecture_is_one_clear_error() -> None:
    from cmi_cli.errors import ArtifactError

    spec = model_spec(build_model("fast_unet", 5))
    spec["pruned"] = {"enc1.0": {"in_channels": 3, "out_channels": 8, "groups": 1}}
    with pytest.raises(ArtifactError, match=r"enc1\.0"):
        build_from_spec(spec)


def test_prune_halves_channels_and_records_its_parent(
    pruned: PruneResult, trained_project: TrainedProject
) -> None:
    model, lineage = load_model(pruned.path)
    assert model.stem[0].out_channels == 8  # 16 before
    assert model.down[2][0].out_channels == 64  # 128 before
    assert pruned.after.parameters < 0.3 * pruned.before.parameters
    assert pruned.after.gflops < 0.3 * pruned.before.gflops
    assert pruned.before.miou is not None
    assert pruned.after.miou is not None
    assert lineage["kind"] == "checkpoint"
    assert lineage["parent"]["sha256"] == sha256_file(trained_project.ckpt)
    assert lineage["parent"]["ratio"] == 0.5
    assert lineage["prune"]["finetune_epochs"] == 1
    assert lineage["model"]["parameters"] == pruned.after.parameters
    assert lineage["metrics"]["val/miou"] == pytest.approx(pruned.after.miou)


def test_pruned_lineage_keeps_what_the_parent_was_made_from(pruned: PruneResult) -> None:
    _, parent = load_model(pruned.parent)
    _, lineage = load_model(pruned.path)
    for key in ("architecture", "encoder", "input_divisor", "weights"):
        assert key in lineage["model"], key
        assert lineage["model"][key] == parent["model"][key], key
    assert lineage["data"] == parent["data"]
    assert lineage["config"] == parent["config"]


def test_pruned_checkpoint_evaluates_and_exports(
    pruned: PruneResult, in_project: Path, tmp_path: Path
) -> None:
    from cmi_cli.export.onnx_export import export_onnx
    from cmi_cli.export.ort_predict import OnnxPredictor
    from cmi_cli.training.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(pruned.path)
    assert result.scores.miou == pytest.approx(pruned.after.miou, abs=1e-6)
    onnx_path = export_onnx(pruned.path, tmp_path / "pruned.onnx").path
    logits = OnnxPredictor(onnx_path).predict(torch.zeros(1, 3, 32, 32).numpy())
    assert logits.shape == (1, 104, 32, 32)


def test_cli_prints_before_and_after_and_writes_the_default_path(
    trained_project: TrainedProject, in_project: Path, tmp_path: Path
) -> None:
    run = tmp_path / "runs" / "r"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = shutil.copy(trained_project.ckpt, run / "checkpoints" / "best.ckpt")
    result = runner.invoke(app, ["prune", str(ckpt), "--ratio", "0.25", "--finetune-epochs", "0"])
    assert result.exit_code == 0, result.output
    for word in ("parameters", "GFLOPs", "latency", "mIoU", "before", "after"):
        assert word in result.output
    assert default_pruned_path(Path(ckpt), 0.25) == run / "pruned-r0.25.ckpt"
    assert (run / "pruned-r0.25.ckpt").is_file()


def test_bad_inputs_fail_in_one_line_and_leave_nothing(
    trained_project: TrainedProject, in_project: Path, tmp_path: Path
) -> None:
    good = trained_project.ckpt.read_bytes()
    (tmp_path / "text.ckpt").write_text("not a checkpoint\n")
    (tmp_path / "truncated.ckpt").write_bytes(good[: len(good) // 3])
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07" + b"\x00" * 64)
    mini = build_model("mini_unet", 104)
    state = {f"net.{k}": v for k, v in mini.state_dict().items()}
    lineage = torch.load(trained_project.ckpt, weights_only=True)["cmi_lineage"]
    torch.save({"state_dict": state, "cmi_lineage": lineage}, tmp_path / "other.ckpt")
    cases = {
        "missing.ckpt": "not found",
        "text.ckpt": "not a",
        "truncated.ckpt": "truncated",
        "model.onnx": "not a",
        "other.ckpt": "do not fit",
    }
    out = tmp_path / "out"
    out.mkdir()
    for name, words in cases.items():
        result = runner.invoke(
            app,
            ["prune", str(tmp_path / name), "--out", str(out / "p.ckpt"), "--finetune-epochs", "0"],
        )
        assert result.exit_code == 1, (name, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, (name, result.output)
        assert lines[0].startswith("error:"), (name, lines[0])
        assert words in lines[0], (name, lines[0])
    assert _leftovers(out) == []
    bad_ratio = runner.invoke(app, ["prune", str(trained_project.ckpt), "--ratio", "1.5"])
    assert bad_ratio.exit_code == 2
    assert "--ratio" in bad_ratio.output
