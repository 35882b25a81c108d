"""Selection on the carved validation split only; test scored apart and labelled; native scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.config import compose_train_config
from cmi_cli.data.layout import open_dataset
from cmi_cli.data.split import CarvedSource, names_digest
from cmi_cli.data.transforms import resize_mask
from cmi_cli.training.evaluate import evaluate_checkpoint
from cmi_cli.training.train import train

runner = CliRunner()
TINY = ["debug=tiny", "data.limit=null", "data.image_size=32", "trainer.max_epochs=2"]


def run_tiny(project: Path, *extra: str):
    cfg = compose_train_config([*TINY, *extra], project_root=project)
    return train(cfg, project_root=project, show_progress=False)


def test_monitor_metrics_come_from_the_carved_split_and_test_is_apart(
    tiny_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cmi_cli.data.dataset import SegmentationDataset

    # Record the names of the pairs every validation batch was read from.
    seen: list[str] = []
    original = SegmentationDataset.__getitem__

    def spy(self: SegmentationDataset, index: int):  # type: ignore[no-untyped-def]
        seen.append(f"{self.split}:{self.items[index].key}")
        return original(self, index)

    monkeypatch.setattr(SegmentationDataset, "__getitem__", spy)
    result = run_tiny(tiny_project, "run.name=honest", "test_after_fit=true")
    root = tiny_project / "data" / "foodseg103"
    carved = CarvedSource(open_dataset(root), 0.1)
    val_keys = {i.key for i in carved.items("val")}
    val_reads = {s.split(":", 1)[1] for s in seen if s.startswith("val:")}
    train_reads = {s.split(":", 1)[1] for s in seen if s.startswith("train:")}
    test_reads = {s.split(":", 1)[1] for s in seen if s.startswith("test:")}
    assert val_reads == val_keys
    assert len(val_keys) == 3
    assert not train_reads & val_keys
    assert all(k.startswith("test/") for k in test_reads)
    assert test_reads
    # Lineage names the carve; metrics keep val and test apart.
    ckpt = torch.load(result.best_ckpt, map_location="cpu", weights_only=True)
    data = ckpt["cmi_lineage"]["data"]
    assert data["val_split"] == "val"
    assert data["test_split"] == "test"
    assert data["validation"]["names_sha1"] == names_digest(val_keys)
    assert data["num_val"] == 3
    assert data["num_train"] == 9
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["monitor"] == "val/miou"
    assert metrics["test"]["split"] == "test"
    assert metrics["test"]["num_images"] == 4
    assert "test/miou" in metrics["test"]
    assert not any(k.startswith("test/") for k in metrics["best"])
    card = (result.run_dir / "model_card.md").read_text()
    assert "test: held out, never used for selection" in card
    assert "| test/miou |" in card
    # The logged val/miou is exactly the checkpoint's score on the carved split.
    val_eval = evaluate_checkpoint(result.best_ckpt, split="val", resolution="model")
    assert val_eval.scores.miou == pytest.approx(metrics["best"]["val/miou"], abs=1e-6)


def test_evaluate_defaults_to_test_at_the_annotations_own_size(tiny_project: Path) -> None:
    result = run_tiny(tiny_project, "run.name=native")
    out = runner.invoke(app, ["evaluate", str(result.best_ckpt)], env={"COLUMNS": "160"})
    assert out.exit_code == 0, out.output
    report = json.loads((result.run_dir / "eval-best-test.json").read_text())
    assert report["split"] == "test"
    assert report["split_role"] == "test"
    assert report["resolution"] == "label"
    # Scored on the untouched 48 px masks, not the 32 px training squares.
    source = open_dataset(tiny_project / "data" / "foodseg103")
    masks = [source.read(i)[1] for i in source.items("test")]
    labelled = sum(int((m != 255).sum()) for m in masks)
    assert report["num_pixels"] == labelled
    assert labelled > 4 * 32 * 32
    small = evaluate_checkpoint(result.best_ckpt, resolution="model")
    assert small.to_dict()["num_pixels"] <= 4 * 32 * 32
    assert "each annotation's own size" in " ".join(out.output.split())


def test_evaluate_rejects_an_unknown_resolution(tiny_project: Path) -> None:
    out = runner.invoke(app, ["evaluate", "x.ckpt", "--resolution", "huge"])
    assert out.exit_code != 0
    assert "Traceback" not in out.output


def test_label_resolution_upsamples_logits_not_the_mask(tiny_project: Path) -> None:
    from cmi_cli.training.evaluate import evaluate_predictor

    root = tiny_project / "data" / "foodseg103"
    source = open_dataset(root)
    names = list(source.class_names)
    lineage = {
        "class_names": names,
        "preprocessing": {"image_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3},
    }
    truth = {i.key: source.read(i)[1] for i in source.items("test")}

    # An oracle at 16 px: logits that encode the ground truth squashed to 16 px.
    order = iter(truth.values())

    def predict(batch: np.ndarray) -> np.ndarray:
        out = np.zeros((len(batch), len(names), 16, 16), np.float32)
        for k in range(len(batch)):
            small = resize_mask(next(order), 16, 16)
            small = np.where(small == 255, 0, small)
            rows, cols = np.indices(small.shape)
            out[k, small, rows, cols] = 10.0
        return out

    _, n, scores = evaluate_predictor(predict, root, "test", lineage, batch_size=2)
    assert n == len(truth)
    assert scores.num_pixels == sum(int((m != 255).sum()) for m in truth.values())
    # An oracle loses only along boundaries at 48 px: well above chance, below perfect.
    assert 0.5 < scores.pixel_accuracy < 1.0
