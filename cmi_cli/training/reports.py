"""What a run folder shows people: history CSV, curves, prediction panels and a model card."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cmi_cli.classes import class_colors
from cmi_cli.utils.files import atomic_path, atomic_write_text

HISTORY_FIELDS = (
    "epoch",
    "step",
    "train/loss",
    "val/loss",
    "val/miou",
    "val/pixel_acc",
    "val/mean_class_acc",
    "lr",
    "epoch_seconds",
)


def write_history_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write one row per epoch with the fields of :data:`HISTORY_FIELDS`."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in HISTORY_FIELDS})
    return atomic_write_text(path, buf.getvalue())


def read_history_csv(path: Path) -> list[dict[str, Any]]:
    """Read a history written by :func:`write_history_csv` (numbers as floats, epoch as int)."""
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    with path.open(newline="") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if value in ("", None):
                    row[key] = None
                elif key in ("epoch", "step"):
                    row[key] = int(float(value))
                else:
                    row[key] = float(value)
            rows.append(row)
    return rows


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _figure():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Plot training/validation loss and validation mIoU per epoch into a PNG."""
    plt = _figure()
    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for key, label in (("train/loss", "train loss"), ("val/loss", "val loss")):
        xs, ys = _series(rows, key)
        if xs:
            ax_loss.plot(xs, ys, marker="o", label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    xs, ys = _series(rows, "val/miou")
    if xs:
        ax_miou.plot(xs, ys, marker="o", color="tab:green")
    ax_miou.set_xlabel("epoch")
    ax_miou.set_ylabel("validation mIoU (split carved from train)")
    ax_miou.set_ylim(0, 1)
    ax_miou.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def colorize(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Map a class-id mask to RGB with the shared class colours (255 -> white)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:num_classes] = np.array(class_colors(num_classes), dtype=np.uint8)
    palette[255] = 255
    return palette[mask.astype(np.uint8)]


def plot_predictions(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    class_names: Sequence[str],
    path: Path,
) -> Path:
    """Draw image / ground truth / prediction rows with a legend of the classes shown."""
    from matplotlib.patches import Patch

    plt = _figure()
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n + 0.8), dpi=100, squeeze=False)
    shown: set[int] = set()
    for i, (img, gt, pr) in enumerate(zip(images, targets, preds, strict=True)):
        for j, (pic, title) in enumerate(
            (
                (img, "image"),
                (colorize(gt, len(class_names)), "ground truth"),
                (colorize(pr, len(class_names)), "prediction"),
            )
        ):
            axes[i][j].imshow(pic)
            axes[i][j].set_axis_off()
            if i == 0:
                axes[i][j].set_title(title)
        shown |= {int(c) for c in np.unique(gt) if c != 255} | {int(c) for c in np.unique(pr)}
    colors = class_colors(len(class_names))
    handles = [
        Patch(color=_rgb01(colors[c]), label=f"{c} {class_names[c]}")
        for c in sorted(shown)
        if c < len(class_names)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, max(1, len(handles))), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _rgb01(color: tuple[int, int, int]) -> tuple[float, float, float]:
    return (color[0] / 255, color[1] / 255, color[2] / 255)


def write_model_card(lineage: dict[str, Any], metrics: dict[str, Any], path: Path) -> Path:
    """Write a Markdown model card from a checkpoint's lineage and its metrics."""
    model = lineage.get("model", {})
    data = lineage.get("data", {})
    code = lineage.get("code", {})
    pre = lineage.get("preprocessing", {})
    best = metrics.get("best", {})
    final = metrics.get("final", {})
    lines = [
        f"# Model card: {model.get('name', '?')}",
        "",
        "Semantic segmentation of food photos (FoodSeg103 classes, id 0 = background).",
        "",
        "## Model",
        f"- architecture: `{model.get('name')}` with `{json.dumps(model.get('params', {}))}`",
        f"- classes: {lineage.get('num_classes')}",
        f"- parameters: {model.get('parameters', 'n/a')}",
        "",
        "## Input",
        f"- size {pre.get('image_size')}, RGB, mean {pre.get('mean')}, std {pre.get('std')}",
        "",
        "## Training data",
        f"- root: `{data.get('root')}`, DVC md5: `{data.get('dvc_md5')}`",
        f"- images: {data.get('num_train')} train, {data.get('num_val')} validation "
        f"(split `{data.get('val_split')}`{_carve_text(data.get('validation'))})",
        "",
        "## Metrics (validation: picks the checkpoint)",
        "| metric | best | final |",
        "| --- | --- | --- |",
    ]
    for key in ("val/miou", "val/pixel_acc", "val/mean_class_acc", "val/loss"):
        lines.append(f"| {key} | {_num(best.get(key))} | {_num(final.get(key))} |")
    test = metrics.get("test")
    lines += ["", "## Metrics (test: held out, never used for selection)"]
    if test:
        lines += [
            f"Split `{test.get('split')}`, {test.get('num_images')} images, scored at the "
            "model's input size once training had ended.",
            "",
            "| metric | value |",
            "| --- | --- |",
        ]
        for key in ("test/miou", "test/pixel_acc", "test/mean_class_acc"):
            lines.append(f"| {key} | {_num(test.get(key))} |")
    else:
        lines.append(
            "- not run: `cmi evaluate CHECKPOINT` scores the test split at each "
            "annotation's own size (or train with `test_after_fit=true`)."
        )
    lines += [
        "",
        "## Provenance",
        f"- code: {code.get('package')}, git {code.get('git_commit')} "
        f"(dirty: {code.get('git_dirty')}), torch {code.get('torch')}",
        f"- created: {lineage.get('created_at')}",
        "",
        "## Limitations",
        "- Trained on the data above only; photos unlike it (lighting, cuisine, camera) may "
        "score far lower. Check inputs with `cmi drift-check`.",
        "",
    ]
    return atomic_write_text(path, "\n".join(lines))


def _carve_text(carve: Any) -> str:
    if not isinstance(carve, dict):
        return ""
    return (
        f", {carve.get('fraction', 0):.0%} of {carve.get('from')} chosen by sha1 of names, "
        f"names sha1 `{carve.get('names_sha1')}`"
    )


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"
