"""Robustness to drift: accuracy under corruptions, and how often the drift check notices.

For each corruption and severity one pass over the split scores the model (mIoU, as
``cmi evaluate``) and computes the same features the server logs. The drift check runs as it
would in production, on windows of ``window`` photos against a reference of clean photos:

* the split is halved by index parity; the clean even half is the reference, the odd half
  (clean or corrupted) is cut into windows, so the clean row's rate is an honest false-alarm
  rate (a window is never compared with itself);
* the detection rate of a setting is the share of its windows that the check flags (share of
  drifted features above the threshold).

A corruption that costs accuracy at a severity with a low detection rate is one the monitor
would miss.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmi_cli.errors import UsageError
from cmi_cli.monitoring.drift import DEFAULT_THRESHOLD, run_drift
from cmi_cli.monitoring.model_reference import load_predictor
from cmi_cli.monitoring.reference import FeatureTable, compute_features

DEFAULT_WINDOW = 100
MIN_WINDOW = 10
MAX_WINDOWS = 5


@dataclass
class RobustnessRow:
    """One corruption at one severity (``none``/0: the clean split).

    Attributes:
        miou: Mean IoU on the whole split.
        pixel_accuracy: Pixel accuracy on the whole split.
        windows: Drift checks run (windows of the odd half).
        flagged: Windows the check flagged.
        detection_rate: ``flagged / windows``; None when too few images for a window.
        drifted_features: Features that drifted in any window, most often first.
    """

    corruption: str
    severity: int
    miou: float
    pixel_accuracy: float
    windows: int = 0
    flagged: int = 0
    detection_rate: float | None = None
    drifted_features: list[str] = field(default_factory=list)


@dataclass
class RobustnessResult:
    """All rows of a robustness run, with what was measured."""

    model_path: Path
    data_root: Path
    split: str
    num_images: int
    window: int
    threshold: float
    clean: RobustnessRow
    rows: list[RobustnessRow]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe record."""
        return {
            "model": str(self.model_path),
            "data": str(self.data_root),
            "split": self.split,
            "num_images": self.num_images,
            "window": self.window,
            "threshold": self.threshold,
            "clean": asdict(self.clean),
            "rows": [asdict(r) for r in self.rows],
        }


def evaluate_robustness(
    model: Path,
    corruptions: Sequence[str],
    severities: Sequence[int],
    *,
    data_root: Path | None = None,
    split: str | None = None,
    window: int = DEFAULT_WINDOW,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 8,
    limit: int | None = None,
    max_windows: int = MAX_WINDOWS,
) -> RobustnessResult:
    """Score a model under corruptions and measure the drift check's detection rate.

    Args:
        model: A checkpoint or ONNX model.
        corruptions: Names from :data:`~cmi_cli.monitoring.corruptions.CORRUPTIONS`.
        severities: Severities in 1..5.
        data_root: Dataset; default the one in the model's lineage.
        split: Split; default the layout's validation split.
        window: Photos per drift check (the server's ``--drift-window``).
        threshold: Share of drifted features that flags a window.
        batch_size: Images per forward pass.
        limit: Use at most this many images.
        max_windows: Most drift checks per setting (each takes about a second).

    Raises:
        UsageError: For a window below :data:`MIN_WINDOW` or an unknown corruption.
    """
    from cmi_cli.monitoring.corruptions import corruption_fn
    from cmi_cli.training.evaluate import resolve_eval_data

    if window < MIN_WINDOW:
        raise UsageError(f"--window {window} is too small", hint=f"Use at least {MIN_WINDOW}")
    fns = {(c, s): corruption_fn(c, s) for c in corruptions for s in severities}
    predict, lineage = load_predictor(model)
    root = resolve_eval_data(lineage, data_root)
    clean_table, clean_row, split = _score(
        predict, lineage, root, split, None, None, batch_size, limit
    )
    reference = _half(clean_table, 0)
    window = min(window, max(MIN_WINDOW, len(clean_table) // 2))
    _add_detection(clean_row, reference, _half(clean_table, 1), window, threshold, max_windows)
    rows = []
    for (name, severity), fn in fns.items():
        table, row, _ = _score(
            predict, lineage, root, split, fn, clean_table.share_classes, batch_size, limit
        )
        row.corruption, row.severity = name, severity
        _add_detection(row, reference, _half(table, 1), window, threshold, max_windows)
        rows.append(row)
    return RobustnessResult(
        Path(model), root, split, len(clean_table), window, threshold, clean_row, rows
    )


def _score(
    predict: Any,
    lineage: dict[str, Any],
    root: Path,
    split: str | None,
    corrupt: Any,
    share_classes: list[str] | None,
    batch_size: int,
    limit: int | None,
) -> tuple[FeatureTable, RobustnessRow, str]:
    from cmi_cli.classes import IGNORE_INDEX
    from cmi_cli.data.layout import default_val_split, open_dataset
    from cmi_cli.training.metrics import compute_metrics, update_confusion_np

    names = list(lineage["class_names"])
    conf = np.zeros((len(names), len(names)), dtype=np.int64)

    def score(logits: np.ndarray, masks: np.ndarray) -> None:
        update_confusion_np(conf, logits.argmax(axis=1), masks, len(names), IGNORE_INDEX)

    split = split or default_val_split(open_dataset(root))
    table = compute_features(
        root, split, lineage=lineage, predict=predict, share_classes=share_classes,
        batch_size=batch_size, limit=limit, corrupt=corrupt, on_batch=score,
    )  # fmt: skip
    scores = compute_metrics(conf, names)
    return table, RobustnessRow("none", 0, scores.miou, scores.pixel_accuracy), split


def _half(table: FeatureTable, parity: int) -> FeatureTable:
    return FeatureTable(list(table.columns), table.rows[parity::2], table.source)


def _add_detection(
    row: RobustnessRow,
    reference: FeatureTable,
    current: FeatureTable,
    window: int,
    threshold: float,
    max_windows: int,
) -> None:
    if len(current) < MIN_WINDOW or len(reference) < MIN_WINDOW:
        return
    count = min(max_windows, max(1, len(current) // window))
    flagged, hits = 0, dict[str, int]()
    for i in range(count):
        with _constant_feature_warnings_silenced():
            result = run_drift(reference, current.subset(i * window, (i + 1) * window),
                               threshold, min_samples=MIN_WINDOW)  # fmt: skip
        flagged += result.drifted
        for name in result.drifted_features:
            hits[name] = hits.get(name, 0) + 1
    row.windows, row.flagged = count, flagged
    row.detection_rate = flagged / count
    row.drifted_features = sorted(hits, key=lambda n: (-hits[n], n))


@contextmanager
def _constant_feature_warnings_silenced() -> Iterator[None]:
    """Silence numpy's divide warnings from Evidently's correlation matrix, only those.

    A strong corruption makes a feature constant over a window (brightness 5 saturates every
    photo); Evidently's drift calculation draws a correlation matrix of the window with
    ``np.corrcoef``, which divides by that column's zero deviation and warns once or twice per
    window, dozens of times a run. The matrix is only a picture: the per-column drift verdicts
    we read do not use it, and a constant column is itself reported as drifted.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="invalid value encountered in divide",
            category=RuntimeWarning,
            module=r"numpy\.lib\.",
        )
        yield


def robustness_folder(model: Path) -> Path:
    """The model's folder: the run folder of a checkpoint, else the model's own folder."""
    model = Path(model)
    return model.parent.parent if model.parent.name == "checkpoints" else model.parent


def plot_robustness(result: RobustnessResult, path: Path) -> Path:
    """Draw mIoU against severity, one line per corruption (severity 0 = clean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cmi_cli.utils.files import atomic_path

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name in dict.fromkeys(r.corruption for r in result.rows):
        pts = [(0, result.clean.miou)] + [
            (r.severity, r.miou) for r in result.rows if r.corruption == name
        ]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("mIoU")
    ax.set_title(f"Robustness of {result.model_path} on {result.split}")
    ax.set_xticks(range(0, 6))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def robustness_card(result: RobustnessResult) -> str:
    """Return the Markdown robustness card."""
    clean = result.clean
    lines = [
        f"# Robustness card: {result.model_path}",
        "",
        f"Data: `{result.data_root}` split `{result.split}` ({result.num_images} images). "
        f"Drift check: windows of {result.window} photos against the clean even half, "
        f"flagged when more than {result.threshold:.0%} of the features drift.",
        "",
        f"Clean mIoU {clean.miou:.4f}; false-alarm rate on clean windows "
        f"{_rate(clean.detection_rate)}.",
        "",
        "| corruption | severity | mIoU | Δ mIoU | detection rate | drifted features |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in result.rows:
        lines.append(
            f"| {r.corruption} | {r.severity} | {r.miou:.4f} | {r.miou - clean.miou:+.4f} | "
            f"{_rate(r.detection_rate)} | {', '.join(r.drifted_features) or '-'} |"
        )
    missed = [
        f"{r.corruption} {r.severity}"
        for r in result.rows
        if r.miou < clean.miou - 0.05 and r.detection_rate is not None and r.detection_rate < 0.5
    ]
    lines += [
        "",
        "Missed (mIoU down more than 0.05, detected in under half the windows): "
        + (", ".join(missed) or "none") + ".",
        "",
        "![mIoU against severity](robustness.png)",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def write_robustness(result: RobustnessResult, folder: Path | None = None) -> dict[str, Path]:
    """Write ``robustness.json``, ``robustness.png`` and ``robustness_card.md`` to ``folder``."""
    from cmi_cli.utils.files import atomic_write_text

    folder = Path(folder) if folder is not None else robustness_folder(result.model_path)
    out = {
        "json": atomic_write_text(
            folder / "robustness.json", json.dumps(result.to_dict(), indent=2)
        ),
        "png": plot_robustness(result, folder / "robustness.png"),
        "card": atomic_write_text(folder / "robustness_card.md", robustness_card(result)),
    }
    return out


def render_robustness(result: RobustnessResult, console: Any) -> None:
    """Print the robustness table: mIoU and its drop, and the detection rate per setting."""
    from rich.table import Table

    clean = result.clean
    table = Table(
        title=f"Robustness on {result.split} ({result.num_images} images, window {result.window})"
    )
    for col in ("corruption", "severity", "mIoU", "Δ mIoU", "detected"):
        table.add_column(col, justify="left" if col == "corruption" else "right")
    table.add_row("none", "0", f"{clean.miou:.4f}", "", _rate(clean.detection_rate))
    for r in result.rows:
        table.add_row(
            r.corruption, str(r.severity), f"{r.miou:.4f}", f"{r.miou - clean.miou:+.4f}",
            _rate(r.detection_rate),
        )  # fmt: skip
    console.print(table)
