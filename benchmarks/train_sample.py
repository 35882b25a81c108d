"""Train the default model with the default config on the default sample, and time it.

Steps, in one process:

1. Generate the default synthetic sample (``generate_sample`` with its defaults) into a temporary
   project, compose the default training config with ``logger=none`` and run ``train()``:
   print the wall time, the images per second and the validation mIoU (best and final).
2. Overhead of Lightning: train a fresh copy of the same model on the same DataLoader with the
   same optimiser, loss and gradient clipping, once with a plain PyTorch loop and once with
   Lightning (validation, checkpoints, logger and progress bar off), interleaved
   (plain, Lightning, plain, ...) so machine noise hits both alike. Each timing skips the first
   batches (warm-up) and the medians are compared.

Goal: the default run takes at most 10 minutes on a 2-core CPU, and Lightning's throughput is
within 10% of the plain loop's.

    python benchmarks/train_sample.py [--images N] [--size PX] [--epochs E] [--out DIR]
                                      [--skip-plain] [--rounds 3] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

WARMUP_BATCHES = 2


def _default(name: str) -> Any:
    from cmi_cli.data.sample import generate_sample

    return inspect.signature(generate_sample).parameters[name].default


def train_default(project: Path, overrides: list[str]) -> dict[str, Any]:
    """Run ``cmi train``'s code path on the project; return timings and scores."""
    from cmi_cli.config import compose_train_config
    from cmi_cli.training.train import train

    cfg = compose_train_config(["logger=none", "run.name=bench", *overrides], project_root=project)
    start = time.perf_counter()
    result = train(cfg, project_root=project, show_progress=False)
    wall = time.perf_counter() - start
    history = result.history
    mious = [r.get("val/miou") or 0.0 for r in history]
    steps = int(history[-1]["step"]) if history else 0
    epoch_seconds = sum(float(r["epoch_seconds"]) for r in history)
    return {
        "cfg": cfg,
        "wall_s": wall,
        "epochs": len(history),
        "images_seen": steps * int(cfg.data.batch_size),
        "epoch_s": epoch_seconds,
        "best_miou": max(mious) if mious else float("nan"),
        "best_epoch": mious.index(max(mious)) if mious else -1,
        "final_miou": mious[-1] if mious else float("nan"),
        "final_pixel_acc": history[-1].get("val/pixel_acc") if history else None,
        "final_train_loss": history[-1].get("train/loss") if history else None,
    }


class _BatchClock:
    """Times the batches after the warm-up ones; used by both loops."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.images = 0
        self.seen = 0

    def batch_done(self, batch_size: int) -> None:
        self.seen += 1
        if self.seen == WARMUP_BATCHES:
            self.start = time.perf_counter()
        elif self.seen > WARMUP_BATCHES:
            self.images += batch_size

    def rate(self) -> float:
        assert self.start is not None, "too few batches to time"
        return self.images / (time.perf_counter() - self.start)


def _module(cfg: Any, dm: Any) -> Any:
    from omegaconf import OmegaConf

    from cmi_cli.training.module import SegmentationModule

    container: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    spec = {
        "name": str(cfg.model.name),
        "num_classes": dm.num_classes,
        "params": dict(container["model"].get("params") or {}),
    }
    return SegmentationModule(
        model_spec=spec,
        class_names=dm.class_names,
        optim=dict(container["optim"]),
        loss=dict(container["loss"]),
        max_epochs=int(cfg.trainer.max_epochs),
    )


def plain_rate(cfg: Any, dm: Any, steps: int) -> float:
    """Images/s of a hand-written loop: same model, data, optimiser, loss and clipping."""
    import torch

    # The module only supplies the freshly built network, its loss and its optimiser.
    module = _module(cfg, dm)
    net = module.net
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    clip = cfg.trainer.get("gradient_clip_val")
    clock = _BatchClock()
    net.train()
    done = 0
    while done < steps:
        for batch in dm.train_dataloader():
            # What the DataModule's on_after_batch_transfer hook does under Lightning.
            images, masks = dm.batch_preprocess(batch, train=True)
            loss = module._loss(net(images), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), float(clip))
            optimizer.step()
            _ = loss.item()  # Lightning reads the loss back for logging; so does this loop
            clock.batch_done(images.shape[0])
            done += 1
            if done >= steps:
                break
    return clock.rate()


def lightning_rate(cfg: Any, dm: Any, steps: int, root: Path) -> float:
    """Images/s of Lightning's fit over ``steps`` batches, validation and checkpoints off."""
    import lightning as L

    clock = _BatchClock()

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
            clock.batch_done(int(cfg.data.batch_size))

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        max_epochs=-1,
        precision=cfg.trainer.precision,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        default_root_dir=str(root),
        callbacks=[Clock()],
    )
    trainer.fit(_module(cfg, dm), datamodule=dm)
    return clock.rate()


def overhead(cfg: Any, project: Path, rounds: int, epochs: int) -> dict[str, Any]:
    """Interleave plain and Lightning runs; return their median images/s."""
    import logging
    import warnings

    from omegaconf import OmegaConf

    from cmi_cli.data.config import DataConfig
    from cmi_cli.data.datamodule import SegmentationDataModule

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
    data_cfg = DataConfig.from_mapping(OmegaConf.to_container(cfg.data, resolve=True))  # type: ignore[arg-type]
    dm = SegmentationDataModule(data_cfg, project_root=project)
    dm.setup("fit")
    steps = epochs * len(dm.train_dataloader())
    plain, lightning = [], []
    for _ in range(rounds):
        plain.append(plain_rate(cfg, dm, steps))
        lightning.append(lightning_rate(cfg, dm, steps, project / "runs" / "overhead"))
    p, lt = statistics.median(plain), statistics.median(lightning)
    return {"steps": steps, "plain": p, "lightning": lt, "overhead_pct": (p / lt - 1) * 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="Sample size (default: sample's)")
    parser.add_argument("--size", type=int, default=None, help="Photo size (default: sample's)")
    parser.add_argument("--epochs", type=int, default=None, help="Override trainer.max_epochs")
    parser.add_argument("--out", type=Path, default=None, help="Keep the project here")
    parser.add_argument("--skip-plain", action="store_true", help="Skip the overhead comparison")
    parser.add_argument("--rounds", type=int, default=3, help="Plain/Lightning pairs to time")
    parser.add_argument("--overhead-epochs", type=int, default=1, help="Epochs per timed run")
    parser.add_argument("--set", action="append", default=[], help="Extra override KEY=VALUE")
    args = parser.parse_args()

    import torch

    from cmi_cli.data.sample import generate_sample

    images = args.images or _default("images")
    size = args.size or _default("size")
    overrides = list(args.set)
    if args.epochs is not None:
        overrides.append(f"trainer.max_epochs={args.epochs}")
        if args.epochs < 2:  # the default warm-up epoch needs a later one
            overrides.append("optim.warmup_epochs=0")
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="cmi-train-bench-")
        project = Path(tmp.name)
    else:
        project = args.out.resolve()
        project.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        summary = generate_sample(
            project / "data" / "foodseg103", images=images, size=size, overwrite=True,
            show_progress=False,
        )  # fmt: skip
        gen_s = time.perf_counter() - start
        print(
            f"sample: {summary.counts} at {size}px in {gen_s:.1f} s; "
            f"torch threads {torch.get_num_threads()}; project {project}",
            flush=True,
        )
        run = train_default(project, overrides)
        cfg = run["cfg"]
        print(
            f"config: model={cfg.model.name} {dict(cfg.model.params)} "
            f"image_size={cfg.data.image_size} batch={cfg.data.batch_size} "
            f"optim={cfg.optim.name} lr={cfg.optim.lr} sched={cfg.optim.scheduler} "
            f"warmup={cfg.optim.warmup_epochs} dice={cfg.loss.dice_weight} "
            f"max_epochs={cfg.trainer.max_epochs}",
            flush=True,
        )
        rows = [
            ("sample generation", f"{gen_s:.1f} s"),
            ("training wall time", f"{run['wall_s']:.1f} s ({run['wall_s'] / 60:.2f} min)"),
            ("epochs run", str(run["epochs"])),
            ("images/s (fit, incl. validation)", f"{run['images_seen'] / run['epoch_s']:.1f}"),
            ("val mIoU best", f"{run['best_miou']:.3f} (epoch {run['best_epoch']})"),
            ("val mIoU final", f"{run['final_miou']:.3f}"),
            ("val pixel acc final", f"{run['final_pixel_acc']:.3f}"),
            ("train loss final", f"{run['final_train_loss']:.3f}"),
        ]
        if not args.skip_plain:
            start = time.perf_counter()
            res = overhead(cfg, project, args.rounds, args.overhead_epochs)
            rows += [
                (f"plain PyTorch images/s (median of {args.rounds})", f"{res['plain']:.1f}"),
                (f"Lightning images/s (median of {args.rounds})", f"{res['lightning']:.1f}"),
                ("Lightning overhead", f"{res['overhead_pct']:+.1f}% (goal < 10%)"),
                ("overhead measurement", f"{time.perf_counter() - start:.1f} s"),
            ]
        total = sum(float(v.split()[0]) for k, v in rows[:2])
        rows.append(("sample + training", f"{total:.1f} s (goal <= 600 s)"))
        width = max(len(k) for k, _ in rows)
        print()
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
