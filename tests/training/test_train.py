"""`cmi train` end to end on tiny settings: run folder, lineage, determinism, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.config import compose_train_config
from cmi_cli.training.train import train

runner = CliRunner()
TINY = ["debug=tiny", "data.limit=null", "data.image_size=32", "trainer.max_epochs=2"]
RUN_FILES = [
    "config.yaml",
    "checkpoints/best.ckpt",
    "checkpoints/last.ckpt",
    "metrics.json",
    "history.csv",
    "curves.png",
    "predictions.png",
    "train.log",
    "model_card.md",
]


def run_tiny(project: Path, *extra: str):
    cfg = compose_train_config([*TINY, *extra], project_root=project)
    return train(cfg, project_root=project, show_progress=False)


def test_run_folder_is_complete(tiny_project: Path) -> None:
    result = run_tiny(tiny_project, "run.name=first")
    assert result.run_dir == tiny_project / "runs" / "first"
    for name in RUN_FILES:
        assert (result.run_dir / name).is_file(), name
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2
    assert set(metrics) >= {"best", "final", "best_epoch", "monitor"}
    assert 0.0 <= metrics["final"]["val/miou"] <= 1.0
    history = (result.run_dir / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,")
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1"]
    for png in ("curves.png", "predictions.png"):
        assert (result.run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "run first: starting" in (result.run_dir / "train.log").read_text()
    assert "fast_unet" in (result.run_dir / "model_card.md").read_text()


def test_checkpoint_carries_lineage_and_loads_without_pickled_code(tiny_project: Path) -> None:
    result = run_tiny(tiny_project, "run.name=lin")
    ckpt = torch.load(result.best_ckpt, map_location="cpu", weights_only=True)
    lineage = ckpt["cmi_lineage"]
    assert lineage["kind"] == "checkpoint"
    assert len(lineage["class_names"]) == 104
    assert lineage["class_names"][0] == "background"
    assert lineage["preprocessing"]["image_size"] == 32
    assert lineage["preprocessing"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert lineage["model"]["name"] == "fast_unet"
    assert lineage["model"]["params"]["width"] == 16
    assert lineage["config"]["trainer"]["max_epochs"] == 2
    assert set(lineage["code"]) >= {"package", "git_commit", "git_dirty", "torch"}
    assert "dvc_md5" in lineage["data"]
    assert lineage["metrics"]["epoch"] in (0, 1)
    assert "val/miou" in lineage["metrics"]


def test_same_config_and_seed_give_the_same_metrics(tiny_project: Path) -> None:
    first = run_tiny(tiny_project, "run.name=a", "seed=7")
    second = run_tiny(tiny_project, "run.name=b", "seed=7")
    keys = ("train/loss", "val/loss", "val/miou", "val/pixel_acc")
    for row_a, row_b in zip(first.history, second.history, strict=True):
        for key in keys:
            assert row_a[key] == row_b[key], key


def test_cli_train_prints_final_table_and_cfg(tiny_project: Path) -> None:
    result = runner.invoke(app, ["train", *TINY, "run.name=cli"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "val/miou" in result.output
    assert (tiny_project / "runs" / "cli" / "checkpoints" / "best.ckpt").is_file()
    printed = runner.invoke(app, ["train", "--cfg", "model=mini_unet"])
    assert printed.exit_code == 0
    assert "name: mini_unet" in printed.output


def test_existing_run_folder_needs_resume(tiny_project: Path) -> None:
    run_tiny(tiny_project, "run.name=again")
    result = runner.invoke(app, ["train", *TINY, "run.name=again"])
    assert result.exit_code == 2
    assert "--resume" in result.output


@pytest.mark.parametrize(
    ("setup", "extra", "expected"),
    [
        ("delete", [], "data/foodseg103"),
        ("empty-split", [], "no image/mask pairs"),
        ("none", ["data.num_classes=50"], "104 classes but data.num_classes is 50"),
        ("none", ["data.batch_size=64"], "data.batch_size is 64"),
        ("none", ["trainer.max_epoch=3"], "did you mean 'trainer.max_epochs'"),
    ],
)
def test_clear_errors(tiny_project: Path, setup: str, extra: list[str], expected: str) -> None:
    data = tiny_project / "data" / "foodseg103"
    if setup == "delete":
        shutil.rmtree(data)
    elif setup == "empty-split":
        for folder in ("img_dir", "ann_dir"):
            for f in (data / "Images" / folder / "test").iterdir():
                f.unlink()
    result = runner.invoke(app, ["train", *TINY, *extra], env={"COLUMNS": "200"})
    assert result.exit_code != 0
    assert expected in result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output


def test_evaluate_matches_training_validation(tiny_project: Path) -> None:
    result = run_tiny(tiny_project, "run.name=ev")
    # Validation is the share carved out of train, scored at the training size.
    out = runner.invoke(
        app,
        ["evaluate", str(result.best_ckpt), "--split", "val", "--resolution", "model"],
        env={"COLUMNS": "120"},
    )
    assert out.exit_code == 0, out.output
    assert "mIoU" in out.output
    report = json.loads((result.run_dir / "eval-best-val.json").read_text())
    best = json.loads((result.run_dir / "metrics.json").read_text())["best"]
    assert report["miou"] == pytest.approx(best["val/miou"], abs=1e-6)
    assert report["pixel_accuracy"] == pytest.approx(best["val/pixel_acc"], abs=1e-6)
    assert len(report["best_classes"]) <= 5


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_evaluate_rejects_bad_checkpoints(tiny_project: Path, content: bytes | None) -> None:
    path = tiny_project / "bad.ckpt"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "checkpoint" in result.output
