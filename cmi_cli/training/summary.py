"""Terminal summaries of training and evaluation results."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"


def render_train_result(result: Any, console: Console) -> None:
    """Print the final table of a training run: best and final metrics, and where files are."""
    metrics = result.metrics
    table = Table(title=f"run {result.run_dir.name}")
    table.add_column("metric")
    table.add_column(f"best (epoch {metrics.get('best_epoch')})", justify="right")
    table.add_column("final", justify="right")
    best, final = metrics.get("best", {}), metrics.get("final", {})
    for key in ("val/miou", "val/pixel_acc", "val/mean_class_acc", "val/loss", "train/loss"):
        table.add_row(key, _fmt(best.get(key)), _fmt(final.get(key)))
    test = metrics.get("test")
    if test:
        table.add_section()
        for key in ("test/miou", "test/pixel_acc", "test/mean_class_acc"):
            table.add_row(f"{key} ({test.get('split')}, held out)", _fmt(test.get(key)), "")
    console.print(table)
    console.print(f"run folder: {result.run_dir}")
    if result.best_ckpt:
        console.print(f"best checkpoint: {result.best_ckpt}")


def render_eval_result(result: Any, console: Console) -> None:
    """Print an evaluation: the headline metrics, then the five best and worst classes."""
    scores = result.scores
    from cmi_cli.training.evaluate import RESOLUTION_TEXT, split_role

    role = split_role(result.split)
    label = result.split if role == result.split else f"{result.split} ({role})"
    table = Table(
        title=f"{result.model_path.name} on {label}, {result.num_images} images",
        caption=f"scored at {RESOLUTION_TEXT.get(result.resolution, result.resolution)}",
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("mIoU", _fmt(scores.miou))
    table.add_row("pixel accuracy", _fmt(scores.pixel_accuracy))
    table.add_row("mean class accuracy", _fmt(scores.mean_class_accuracy))
    console.print(table)
    best, worst = scores.best_and_worst(5)
    classes = Table(title="classes by IoU")
    classes.add_column("best")
    classes.add_column("IoU", justify="right")
    classes.add_column("worst")
    classes.add_column("IoU", justify="right")
    for i in range(max(len(best), len(worst))):
        b = best[i] if i < len(best) else ("", None)
        w = worst[i] if i < len(worst) else ("", None)
        classes.add_row(b[0], _fmt(b[1]) if b[0] else "", w[0], _fmt(w[1]) if w[0] else "")
    console.print(classes)
