"""The LightningModule: loss, optimiser, schedule, and confusion-matrix metrics per epoch."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from cmi_cli.classes import IGNORE_INDEX
from cmi_cli.models.registry import build_from_spec
from cmi_cli.training.metrics import SegmentationMetric, SegmentationScores


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Soft Dice loss over the classes present in the batch, ignoring ``ignore_index`` pixels."""
    num_classes = logits.shape[1]
    valid = target != ignore_index
    probs = logits.softmax(dim=1) * valid.unsqueeze(1)
    onehot = F.one_hot(target.clamp(0, num_classes - 1) * valid, num_classes)
    onehot = onehot.permute(0, 3, 1, 2).to(probs.dtype) * valid.unsqueeze(1)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims) > 0
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


class SegmentationModule(L.LightningModule):
    """Trains a registered architecture with cross-entropy (+ optional Dice).

    Every constructor argument is a plain value, so the checkpoint's hyper-parameters load
    with ``torch.load(weights_only=True)``.

    Args:
        model_spec: ``{"name", "num_classes", "params"}`` of the architecture.
        class_names: Class names by id.
        optim: Optimiser settings (name, lr, weight_decay, momentum, scheduler, warmup_epochs).
        loss: Loss settings (name, dice_weight, ignore_index, class_weights).
        max_epochs: Planned epochs, for the learning-rate schedule.
        compile: Wrap the network with ``torch.compile``.
    """

    def __init__(
        self,
        model_spec: dict[str, Any],
        class_names: list[str],
        optim: dict[str, Any],
        loss: dict[str, Any],
        max_epochs: int,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_from_spec(model_spec)
        self.ignore_index = int(loss.get("ignore_index", IGNORE_INDEX))
        weights = loss.get("class_weights")
        self.register_buffer(
            "class_weights",
            torch.tensor(weights, dtype=torch.float32) if weights else None,
            persistent=False,
        )
        self.dice_weight = float(loss.get("dice_weight", 0.0))
        self.val_metric = SegmentationMetric(
            len(class_names), ignore_index=self.ignore_index, class_names=class_names
        )
        # A separate matrix for the held-out test split, so no test pixel reaches val/*.
        self.test_metric = SegmentationMetric(
            len(class_names), ignore_index=self.ignore_index, class_names=class_names
        )
        self.test_scores: SegmentationScores | None = None
        # Kept outside the module tree so the compiled wrapper adds no state_dict keys.
        compiled = torch.compile(self.net) if compile else None
        object.__setattr__(self, "_compiled", compiled)
        self.last_scores: SegmentationScores | None = None
        self.lineage: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits [N, C, H, W] for images [N, 3, H, W]."""
        net: Any = self._compiled if self._compiled is not None else self.net
        return net(x)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight: torch.Tensor | None = self.class_weights  # type: ignore[assignment]
        loss = F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index)
        if self.dice_weight > 0:
            loss = loss + self.dice_weight * dice_loss(logits, target, self.ignore_index)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        """Compute and log the training loss of one batch."""
        images, masks = batch
        loss = self._loss(self(images), masks)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Accumulate the confusion matrix and the loss of one validation batch."""
        images, masks = batch
        logits = self(images)
        self.log("val/loss", self._loss(logits, masks), on_epoch=True, sync_dist=True)
        self.val_metric.update(logits, masks)

    def on_validation_epoch_end(self) -> None:
        """Turn the (rank-summed) confusion matrix into mIoU and accuracies."""
        scores = self.val_metric.scores()
        self.val_metric.reset()
        self.last_scores = scores
        values = {
            "val/miou": scores.miou,
            "val/pixel_acc": scores.pixel_accuracy,
            "val/mean_class_acc": scores.mean_class_accuracy,
        }
        # The matrix is already summed over ranks, so every rank logs the same numbers.
        clean = {k: 0.0 if math.isnan(v) else float(v) for k, v in values.items()}
        self.log_dict(clean, prog_bar=True, sync_dist=False)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Accumulate one batch of the held-out test split (the optional final test step)."""
        images, masks = batch
        logits = self(images)
        self.log("test/loss", self._loss(logits, masks), on_epoch=True, sync_dist=True)
        self.test_metric.update(logits, masks)

    def on_test_epoch_end(self) -> None:
        """Log ``test/*`` scores; they never feed checkpointing or early stopping."""
        scores = self.test_metric.scores()
        self.test_metric.reset()
        self.test_scores = scores
        values = {
            "test/miou": scores.miou,
            "test/pixel_acc": scores.pixel_accuracy,
            "test/mean_class_acc": scores.mean_class_accuracy,
        }
        clean = {k: 0.0 if math.isnan(v) else float(v) for k, v in values.items()}
        self.log_dict(clean, sync_dist=False)

    def configure_optimizers(self) -> Any:
        """Build the optimiser and the per-epoch learning-rate schedule."""
        cfg = self.hparams["optim"]
        name, lr, wd = cfg.get("name", "adamw"), float(cfg["lr"]), float(cfg["weight_decay"])
        params = self.net.parameters()
        optimizer: torch.optim.Optimizer
        if name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
        elif name == "adam":
            optimizer = torch.optim.Adam(params, lr=lr, weight_decay=wd)
        else:
            optimizer = torch.optim.SGD(
                params, lr=lr, weight_decay=wd, momentum=float(cfg.get("momentum", 0.9))
            )
        scheduler = cfg.get("scheduler", "cosine")
        if scheduler in (None, "none"):
            return optimizer
        epochs = max(1, int(self.hparams["max_epochs"]))
        warmup = min(int(cfg.get("warmup_epochs", 0)), epochs - 1)
        if scheduler == "onecycle":
            sched: Any = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=lr, total_steps=epochs, pct_start=max(0.05, warmup / epochs)
            )
        else:

            def cosine(epoch: int) -> float:
                if epoch < warmup:
                    return (epoch + 1) / (warmup + 1)
                progress = (epoch - warmup) / max(1, epochs - warmup)
                return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

            sched = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the lineage record, with this epoch's metrics, inside the checkpoint."""
        record = dict(self.lineage)
        if self.last_scores is not None:
            record["metrics"] = {
                "epoch": int(self.current_epoch),
                "val/miou": _finite(self.last_scores.miou),
                "val/pixel_acc": _finite(self.last_scores.pixel_accuracy),
                "val/mean_class_acc": _finite(self.last_scores.mean_class_accuracy),
            }
        checkpoint["cmi_lineage"] = record


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
