"""The end of a training run: metrics.json, predictions.png and the model card."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from cmi_cli.training.reports import plot_predictions, write_model_card
from cmi_cli.utils.files import atomic_write_text

log = logging.getLogger(__name__)


def _callback(trainer: Any, cls_name: str) -> Any:
    return next((c for c in trainer.callbacks if type(c).__name__ == cls_name), None)


def predict_samples(
    net: torch.nn.Module, dataset: Any, count: int, mean: list[float], std: list[float]
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Return photos (uint8 RGB), ground truths and predictions of the first ``count`` items."""
    from cmi_cli.data.batch_transforms import normalize_batch

    images, targets, preds = [], [], []
    net.eval()
    with torch.inference_mode():
        for i in range(min(count, len(dataset))):
            photo, y = dataset[i]
            logits = net(normalize_batch(photo.unsqueeze(0), mean, std))
            images.append(photo.numpy())
            targets.append(y.numpy().astype(np.uint8))
            preds.append(logits.argmax(1)[0].numpy().astype(np.uint8))
    return images, targets, preds


def finish_run(cfg: DictConfig, run_dir: Path, trainer: Any, module: Any, dm: Any) -> Any:
    """Write the run's summary files from the best checkpoint and the history."""
    from cmi_cli.training.checkpoint import load_checkpoint
    from cmi_cli.training.train import TrainResult

    history = list(_callback(trainer, "HistoryCallback").rows)
    ckpt_cb = _callback(trainer, "ModelCheckpoint")
    best = Path(ckpt_cb.best_model_path) if ckpt_cb and ckpt_cb.best_model_path else None
    last = run_dir / "checkpoints" / "last.ckpt"
    lineage = dict(module.lineage)
    best_row: dict[str, Any] = {}
    if best is not None and best.is_file():
        ckpt = load_checkpoint(best)
        lineage = ckpt["cmi_lineage"]
        weights = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
        module.net.load_state_dict(weights)
        best_epoch = lineage.get("metrics", {}).get("epoch")
        best_row = next((r for r in history if r["epoch"] == best_epoch), {})
    metrics = {
        "monitor": str(cfg.checkpoint.monitor),
        "best_epoch": best_row.get("epoch"),
        "epochs_run": len(history),
        "best": best_row,
        "final": history[-1] if history else {},
    }
    if cfg.get("test_after_fit", False):
        metrics["test"] = run_test_step(trainer, module, dm)
    if cfg.get("save_reference", True) and dm.val_set is not None:
        metrics["reference"] = _save_reference(module.net, lineage, run_dir, dm)
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    count = int(cfg.get("num_prediction_images", 4))
    if count > 0 and dm.val_set is not None:
        pre = dm.preprocessing
        images, targets, preds = predict_samples(
            module.net, dm.val_set, count, pre["mean"], pre["std"]
        )
        png = plot_predictions(images, targets, preds, dm.class_names, run_dir / "predictions.png")
        _log_images_to_wandb(trainer, png)
    write_model_card(lineage, metrics, run_dir / "model_card.md")
    return TrainResult(
        run_dir=run_dir,
        best_ckpt=best if best is not None and best.is_file() else None,
        last_ckpt=last if last.is_file() else None,
        metrics=metrics,
        history=history,
    )


def run_test_step(trainer: Any, module: Any, dm: Any) -> dict[str, Any] | None:
    """Score the best weights once on the held-out test split, after selection is over.

    Logged as ``test/*`` (CSV, W&B) and returned for metrics.json and the model card; the
    checkpoint was already chosen on validation, so nothing here can influence it.
    """
    if dm.test_set is None:
        log.warning("no test split in %s: the final test step is skipped", dm.root)
        return None
    if int(getattr(trainer, "world_size", 1)) > 1:
        # Only rank 0 finishes the run; a test loop needs every rank.
        log.warning("the final test step runs in one process only; use `cmi evaluate`")
        return None
    trainer.test(module, datamodule=dm, verbose=False)
    scores = module.test_scores
    if scores is None:
        return None
    return {
        "split": dm.test_split,
        "num_images": len(dm.test_set),
        "resolution": "model",
        "test/miou": _finite(scores.miou),
        "test/pixel_acc": _finite(scores.pixel_accuracy),
        "test/mean_class_acc": _finite(scores.mean_class_accuracy),
    }


def _finite(value: float) -> float | None:
    return None if value != value else float(value)


def _save_reference(net: Any, lineage: dict[str, Any], run_dir: Path, dm: Any) -> Any:
    """Save the held-out split's features as the model's drift reference (None on failure).

    The test split (else validation): photos the model never trained on, enough of them for
    a drift check. Only monitoring reads it; checkpoints were chosen on validation.
    """
    from cmi_cli.errors import CmiError
    from cmi_cli.monitoring.model_reference import save_run_reference

    try:
        split = dm.test_split if dm.test_set is not None else dm.val_split
        return save_run_reference(net, lineage, run_dir, dm.root, split, limit=dm.cfg.limit)
    except (CmiError, OSError) as exc:  # a missing reference must not cost the trained model
        log.warning("could not save the drift reference: %s", exc)
        return None


def _log_images_to_wandb(trainer: Any, png: Path) -> None:
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.log_image(key="predictions", images=[str(png)])


def close_loggers(trainer: Any) -> None:
    """Finish W&B runs so their files are complete (and the next run in this process is new)."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
            logger.experiment.finish()
