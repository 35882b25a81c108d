"""``cmi prune``: structured channel pruning (torch-pruning), a short fine-tune, a new checkpoint.

The story: ``load_model`` -> ``measure`` (parameters, FLOPs, latency, mIoU) -> ``prune_channels``
(torch-pruning's dependency graph keeps every skip connection and concat consistent) ->
``finetune`` (the training config's loop, for a few epochs) -> ``measure`` -> ``save_pruned``.

The pruned checkpoint records every convolution's and batch norm's channel counts in its
model spec (``model.pruned``), so ``build_from_spec`` rebuilds the smaller network from the
unchanged model class, and ``cmi evaluate``, ``cmi export onnx`` and ``cmi benchmark`` take it
like any other checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cmi_cli.errors import UsageError
from cmi_cli.export.timing import torch_latencies_ms, torch_latency_ms


@dataclass
class ModelStats:
    """Size, cost, speed and accuracy of one model."""

    parameters: int
    gflops: float
    latency_ms: float
    miou: float | None


@dataclass
class PruneResult:
    """What ``cmi prune`` made, with the model before and after."""

    path: Path
    parent: Path
    ratio: float
    finetune_epochs: int
    before: ModelStats
    after: ModelStats

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe record."""
        return {
            "path": str(self.path),
            "parent": str(self.parent),
            "ratio": self.ratio,
            "finetune_epochs": self.finetune_epochs,
            "before": asdict(self.before),
            "after": asdict(self.after),
        }


def default_pruned_path(checkpoint: Path, ratio: float) -> Path:
    """``<run folder>/pruned-r<R>.ckpt`` beside the run's ``checkpoints/`` folder."""
    path = Path(checkpoint)
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return folder / f"pruned-r{ratio:g}.ckpt"


def output_layers(model: Any) -> list[Any]:
    """Return the layers whose output channels are the classes (never pruned)."""
    from torch import nn

    num_classes = int(vars(model).get("cmi_num_classes", -1))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    heads = [m for m in convs if m.out_channels == num_classes]
    return heads[-1:] if heads else convs[-1:]


def prune_channels(model: Any, ratio: float, round_to: int = 8, example_size: int = 64) -> Any:
    """Remove ``ratio`` of the channels of every prunable layer group, by L2 magnitude, in place.

    torch-pruning traces ``model`` once to build its dependency graph, so channels removed from a
    convolution are also removed from the batch norm after it and from every layer that reads
    it, through concatenations and skip connections. The class-logit head is kept whole.

    Args:
        model: A registry model in eval mode.
        ratio: Share of channels to remove in each group, in (0, 1).
        round_to: Keep channel counts multiples of this (vectorised kernels like multiples of 8).
        example_size: Side of the dummy input used for tracing.

    Returns:
        The same model object, smaller, with its pruned layer shapes recorded for its spec.
    """
    import torch
    import torch_pruning as tp

    from cmi_cli.models.registry import layer_shapes

    example = torch.zeros(1, 3, example_size, example_size)
    pruner = tp.pruner.BasePruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=output_layers(model),
        round_to=round_to,
    )
    pruner.step()
    vars(model)["cmi_pruned"] = layer_shapes(model)
    return model


def measure(
    model: Any,
    lineage: dict[str, Any],
    data_root: Path | None,
    batch_size: int = 8,
    time_it: bool = True,
) -> ModelStats:
    """Count parameters and FLOPs, time batch-1 eager latency, and score mIoU on validation."""
    import numpy as np

    from cmi_cli.models.complexity import count_flops, count_parameters
    from cmi_cli.training.evaluate import evaluate_predictor

    size = int(lineage["preprocessing"]["image_size"])
    model.eval()
    flops = count_flops(model, (1, 3, size, size))
    latency = torch_latency_ms(model, size) if time_it else float("nan")
    miou = None
    if data_root is not None:
        from cmi_cli.export.timing import torch_forward

        forward = torch_forward(model)
        _, _, scores = evaluate_predictor(
            lambda batch: forward(np.ascontiguousarray(batch)), data_root, None, lineage, batch_size
        )
        miou = float(scores.miou)
    return ModelStats(count_parameters(model), round(flops / 1e9, 4), round(latency, 3), miou)


def finetune(
    model: Any, lineage: dict[str, Any], data_root: Path, epochs: int, show_progress: bool
) -> Any:
    """Train the pruned ``model`` for ``epochs`` with the checkpoint's own training config.

    Same data module, augmentation, loss and optimiser as ``cmi train``, on one CPU/GPU
    process, without logging or checkpoints; returns the fine-tuned network in eval mode.
    """
    from omegaconf import OmegaConf

    from cmi_cli.models.registry import model_spec
    from cmi_cli.training.module import SegmentationModule
    from cmi_cli.training.train import build_data

    cfg = OmegaConf.create(lineage["config"])
    cfg.data.root = str(Path(data_root).resolve())
    dm = build_data(cfg, Path.cwd())
    container: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    module = SegmentationModule(
        model_spec=model_spec(model),
        class_names=list(lineage["class_names"]),
        optim=dict(container["optim"]),
        loss=dict(container["loss"]),
        max_epochs=epochs,
    )
    module.net.load_state_dict(model.state_dict())
    trainer_cfg = container.get("trainer", {})
    from cmi_cli.training.train import quiet_lightning

    with quiet_lightning():
        _fit(trainer_cfg, epochs, show_progress, module, dm)
    return module.net.cpu().eval()


def _fit(
    trainer_cfg: dict[str, Any], epochs: int, show_progress: bool, module: Any, dm: Any
) -> None:
    import lightning as L

    from cmi_cli.training.progress import progress_callback

    trainer = L.Trainer(
        accelerator=str(trainer_cfg.get("accelerator", "auto")),
        devices=1,
        max_epochs=epochs,
        precision=trainer_cfg.get("precision", "32-true"),
        gradient_clip_val=trainer_cfg.get("gradient_clip_val"),
        limit_train_batches=trainer_cfg.get("limit_train_batches"),
        limit_val_batches=trainer_cfg.get("limit_val_batches"),
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=show_progress,
        callbacks=[progress_callback()] if show_progress else [],
    )
    trainer.fit(module, datamodule=dm)


def pruned_lineage(
    parent_lineage: dict[str, Any],
    parent_path: Path,
    model: Any,
    ratio: float,
    epochs: int,
    before: ModelStats,
    after: ModelStats,
) -> dict[str, Any]:
    """Build the pruned checkpoint's lineage: the parent's facts, the pruned spec, the deltas."""
    from cmi_cli.export.metadata import sha256_file
    from cmi_cli.lineage import make_lineage
    from cmi_cli.models.complexity import count_parameters
    from cmi_cli.models.registry import model_spec, zoo_record

    metrics: dict[str, Any] = {"val/miou": after.miou}
    parent_model = dict(parent_lineage.get("model", {}))
    record = make_lineage(
        kind="checkpoint",
        class_names=list(parent_lineage["class_names"]),
        preprocessing=dict(parent_lineage["preprocessing"]),
        model={
            **model_spec(model),
            **zoo_record(model),
            # Pruning keeps the surviving channels of the weights the parent started from.
            "weights": parent_model.get("weights"),
            "parameters": count_parameters(model),
        },
        config=dict(parent_lineage.get("config", {})),
        data=dict(parent_lineage.get("data", {})),
        metrics=metrics,
        project_root=Path.cwd(),
        parent={
            "kind": "checkpoint",
            "path": str(parent_path),
            "sha256": sha256_file(parent_path),
            "ratio": ratio,
            "metrics": parent_lineage.get("metrics", {}),
        },
    )
    record["prune"] = {
        "method": "torch-pruning structured channels, group L2 magnitude",
        "ratio": ratio,
        "finetune_epochs": epochs,
        "before": asdict(before),
        "after": asdict(after),
        "miou_drop": None
        if before.miou is None or after.miou is None
        else round(before.miou - after.miou, 6),
    }
    return record


def save_pruned(model: Any, lineage: dict[str, Any], out: Path) -> Path:
    """Write a checkpoint in ``cmi train``'s format (``state_dict`` of ``net.*``, lineage)."""
    import torch

    from cmi_cli.utils.files import atomic_path

    state = {f"net.{k}": v.contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out, suffix=".ckpt") as tmp:
        torch.save({"state_dict": state, "cmi_lineage": lineage}, tmp)
    return Path(out)


def prune_checkpoint(
    path: Path,
    ratio: float,
    finetune_epochs: int = 5,
    out: Path | None = None,
    data_root: Path | None = None,
    round_to: int = 8,
    show_progress: bool = True,
) -> PruneResult:
    """Prune a checkpoint's channels by ``ratio``, fine-tune, and save a new checkpoint.

    Args:
        path: A checkpoint from ``cmi train`` (or a pruned one, to prune further).
        ratio: Share of channels removed per layer group, in (0, 1); 0.5 halves the widths,
            which removes about three quarters of the parameters and FLOPs.
        finetune_epochs: Epochs of training after pruning (0: none).
        out: Where to write; default ``<run folder>/pruned-r<R>.ckpt``.
        data_root: Dataset for fine-tuning and scoring; default: the checkpoint's own.
        round_to: Keep channel counts multiples of this.
        show_progress: Show the fine-tuning progress bar.

    Returns:
        The written path with parameters, GFLOPs, latency and mIoU before and after.

    Raises:
        UsageError: A ratio outside (0, 1) or negative epochs.
        ArtifactError: The checkpoint is missing, damaged or not from cmi.
        DataError: The training data is not found.
    """
    from cmi_cli.training.checkpoint import load_model
    from cmi_cli.training.evaluate import resolve_eval_data

    if not 0 < ratio < 1:
        raise UsageError(f"--ratio must be between 0 and 1, got {ratio}", hint="Try --ratio 0.5")
    if finetune_epochs < 0:
        raise UsageError("--finetune-epochs must be >= 0", hint="Use 0 to skip fine-tuning")
    path = Path(path)
    parent, lineage = load_model(path)
    model, _ = load_model(path)
    root = resolve_eval_data(lineage, data_root)
    out = Path(out) if out is not None else default_pruned_path(path, ratio)
    before = measure(parent, lineage, root, time_it=False)
    prune_channels(model, ratio, round_to=round_to)
    if finetune_epochs > 0:
        model = finetune(model, lineage, root, finetune_epochs, show_progress)
    after = measure(model, lineage, root, time_it=False)
    size = int(lineage["preprocessing"]["image_size"])
    before.latency_ms, after.latency_ms = (
        round(ms, 3) for ms in torch_latencies_ms([parent, model], size)
    )
    record = pruned_lineage(lineage, path, model, ratio, finetune_epochs, before, after)
    save_pruned(model, record, out)
    return PruneResult(out, path, ratio, finetune_epochs, before, after)
