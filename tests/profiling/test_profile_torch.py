"""`cmi profile --target train|inference`: traces that load as JSON and tables of real ops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.config import compose_train_config
from cmi_cli.profiling.torch_profile import TorchProfile, profile_inference, profile_training

TINY = ["debug=tiny", "data.batch_size=2"]


def trace_names(path: Path) -> set[str]:
    events = json.loads(path.read_text())["traceEvents"]
    return {str(e.get("name")) for e in events}


def check_outputs(profile: TorchProfile) -> set[str]:
    """Both traces are valid JSON with the same events; the tables name aten operators."""
    names = trace_names(profile.trace)
    (tb_trace,) = profile.tensorboard_dir.glob(f"{profile.target}.*.pt.trace.json")
    assert trace_names(tb_trace) == names
    assert f"ProfilerStep#{2 + profile.steps - 1}" in names  # after 1 wait + 1 warm-up step
    assert profile.ops
    assert all(op.calls >= 1 for op in profile.ops)
    assert any(op.name.startswith("aten::") for op in profile.ops)
    # key_averages folds the per-step ranges ProfilerStep#N into "ProfilerStep*".
    assert {op.name for op in profile.ops if op.name != "ProfilerStep*"} <= names
    self_times = [op.self_cpu_us for op in profile.ops]
    assert self_times == sorted(self_times, reverse=True)
    assert all(op.self_cuda_us is None for op in profile.ops)  # no GPU here
    table = profile.table.read_text()
    assert profile.ops[0].name in table
    assert "self CPU" in table
    assert "CUDA" not in table
    saved = json.loads((profile.out_dir / "top_ops.json").read_text())
    assert [op["name"] for op in saved["ops"]] == [op.name for op in profile.ops]
    return names


def test_training_profile_has_named_model_events(tiny_project: Path) -> None:
    cfg = compose_train_config(TINY, project_root=tiny_project)
    profile = profile_training(cfg, tiny_project, steps=1, out_dir=tiny_project / "prof")
    names = check_outputs(profile)
    assert {"train_step", "model_forward", "backward"} <= names
    assert any(n.startswith("aten::convolution_backward") for n in names)
    assert any(n.startswith("Optimizer.step") for n in names)
    assert profile.batch_shape == [2, 3, 32, 32]
    assert profile.device == "cpu"
    assert profile.seconds > 0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_sample_master: Path) -> Path:
    """A checkpoint trained for one epoch on the tiny sample."""
    import shutil

    from cmi_cli.training.train import train

    project = tmp_path_factory.mktemp("ckpt_project")
    shutil.copytree(tiny_sample_master, project / "data" / "foodseg103")
    cfg = compose_train_config(["debug=tiny", "run.name=prof", "logger=none"], project_root=project)
    result = train(cfg, project_root=project, show_progress=False)
    assert result.best_ckpt is not None
    return Path(result.best_ckpt)


def test_inference_profile_of_a_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    profile = profile_inference(checkpoint=checkpoint, steps=2, out_dir=tmp_path, batch_size=3)
    names = check_outputs(profile)
    assert "model_forward" in names
    assert "backward" not in names
    assert profile.batch_shape == [3, 3, 32, 32]
    events = json.loads(profile.trace.read_text())["traceEvents"]
    assert sum(e.get("name") == "model_forward" for e in events) == 2  # active steps only


def test_cli_profiles_inference_of_a_config(tiny_project: Path) -> None:
    out = tiny_project / "out"
    result = CliRunner().invoke(
        app,
        ["profile", "--target", "inference", *TINY, "--steps", "1", "--out", str(out)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "aten::" in result.output
    assert "trace.json" in result.output
    assert json.loads((out / "trace.json").read_text())["traceEvents"]
    assert (out / "top_ops.txt").is_file()


def test_cli_rejects_a_checkpoint_for_training(tiny_project: Path) -> None:
    result = CliRunner().invoke(app, ["profile", "--checkpoint", "x.ckpt"])
    assert result.exit_code == 2
    assert "--checkpoint profiles a trained model's inference" in result.output
    missing = CliRunner().invoke(
        app, ["profile", "--target", "inference", "--checkpoint", "missing.ckpt"]
    )
    assert missing.exit_code != 0
    assert "Traceback" not in missing.output
