"""Describe a dataset: images per split and how the labelled pixels share out among classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cmi_cli.classes import IGNORE_INDEX
from cmi_cli.console import err_console, is_quiet
from cmi_cli.data.layout import open_dataset
from cmi_cli.data.split import DEFAULT_VAL_FRACTION, CarvedSource
from cmi_cli.errors import DataError
from cmi_cli.utils.files import atomic_path

if TYPE_CHECKING:
    from rich.console import Console


@dataclass
class DatasetStats:
    """Counts over a dataset's masks.

    Attributes:
        root: The dataset root described.
        layout: ``folder`` or ``parquet``.
        class_names: Names indexed by class id.
        images: Number of complete pairs per split.
        pixels: Pixels per class id over all splits (ignore pixels excluded; only ids present).
        pixels_per_split: The same per split.
        ignore_pixels: Pixels labelled 255 over all splits.
        unreadable: Keys of pairs whose mask could not be decoded (left out of the counts).
        validation: The validation share training carves out of ``train``
            (:meth:`cmi_cli.data.split.ValidationCarve.to_dict`), or ``None`` without ``train``.
    """

    root: str
    layout: str
    class_names: list[str]
    images: dict[str, int] = field(default_factory=dict)
    pixels: dict[int, int] = field(default_factory=dict)
    pixels_per_split: dict[str, dict[int, int]] = field(default_factory=dict)
    ignore_pixels: int = 0
    unreadable: list[str] = field(default_factory=list)
    validation: dict[str, Any] | None = None

    def name(self, class_id: int) -> str:
        """Return a class's name, or ``id N`` for ids the class list does not cover."""
        return (
            self.class_names[class_id]
            if 0 <= class_id < len(self.class_names)
            else f"id {class_id}"
        )

    def shares(self) -> dict[int, float]:
        """Return each present class id's share of all labelled pixels (they sum to 1)."""
        total = sum(self.pixels.values())
        return {c: n / total for c, n in sorted(self.pixels.items())} if total else {}

    def to_dict(self) -> dict[str, Any]:
        """Return the statistics as JSON-ready data."""
        shares = self.shares()
        return {
            "root": self.root,
            "layout": self.layout,
            "images": dict(self.images),
            "labelled_pixels": sum(self.pixels.values()),
            "ignore_pixels": self.ignore_pixels,
            "classes_present": len(self.pixels),
            "num_classes": len(self.class_names),
            "classes": [
                {"id": c, "name": self.name(c), "pixels": n, "share": shares[c]}
                for c, n in sorted(self.pixels.items())
            ],
            "pixels_per_split": {
                s: {str(c): n for c, n in sorted(counts.items())}
                for s, counts in self.pixels_per_split.items()
            },
            "unreadable": list(self.unreadable),
            "validation": self.validation,
        }


def compute_stats(
    root: Path, show_progress: bool = True, val_fraction: float = DEFAULT_VAL_FRACTION
) -> DatasetStats:
    """Count images per split and pixels per class over every mask of a dataset.

    Splits are counted as stored; the validation share training carves out of ``train``
    is described beside them (``validation``).

    Args:
        root: The dataset root, in either known layout.
        show_progress: Show a progress bar on stderr (never under ``--quiet``).
        val_fraction: The ``data.val_fraction`` to describe the carve with.

    Raises:
        DataError: If the root is missing or not a known layout.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    from cmi_cli.data.layout import decode_mask

    source = open_dataset(Path(root))
    stats = DatasetStats(str(root), source.kind, list(source.class_names))
    if "train" in source.splits():
        stats.validation = CarvedSource(source, val_fraction).carve().to_dict()
    total = np.zeros(256, dtype=np.int64)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console(),
        disable=not show_progress or is_quiet(),
        transient=True,
    ) as progress:
        for split in source.splits():
            items = source.items(split)
            stats.images[split] = len(items)
            counts = np.zeros(256, dtype=np.int64)
            task = progress.add_task(f"counting {split}", total=len(items))
            for item in items:
                try:
                    mask = decode_mask(source.read_mask_bytes(item), item.key)
                except DataError:
                    stats.unreadable.append(item.key)
                else:
                    counts += np.bincount(mask.ravel(), minlength=256)
                progress.advance(task)
            stats.pixels_per_split[split] = _present(counts)
            total += counts
    stats.ignore_pixels = int(total[IGNORE_INDEX])
    stats.pixels = _present(total)
    return stats


def _test_name(stats: DatasetStats) -> str:
    if "test" in stats.images:
        return "'test'"
    if "validation" in stats.images:
        return "'validation' (the export's name for the test split)"
    return "the test split"


def _present(counts: np.ndarray) -> dict[int, int]:
    return {int(c): int(counts[c]) for c in np.flatnonzero(counts) if c != IGNORE_INDEX}


def _ranked(stats: DatasetStats) -> list[tuple[int, float]]:
    return sorted(stats.shares().items(), key=lambda kv: (-kv[1], kv[0]))


def render_stats(stats: DatasetStats, console: Console, top: int = 10) -> None:
    """Print images per split and the most and least common classes present.

    Args:
        stats: What :func:`compute_stats` returned.
        console: Where to print.
        top: How many classes to show at each end.
    """
    from rich.table import Table

    splits = Table(title=f"{stats.root} ({stats.layout} layout)", title_justify="left")
    splits.add_column("split")
    splits.add_column("images", justify="right")
    for split, n in stats.images.items():
        splits.add_row(split, str(n))
    splits.add_row("[bold]total[/bold]", f"[bold]{sum(stats.images.values())}[/bold]")
    console.print(splits)
    val = stats.validation
    if val:
        console.print(
            f"Validation: {val['count']} of {val['count'] + val['train_count']} {val['from']} "
            f"images ({val['fraction']:.0%}, split {val['split']!r}, chosen by sha1 of names; "
            f"names sha1 {val['names_sha1']}). They pick checkpoints; "
            f"{_test_name(stats)} is only for final scores."
        )
    ranked = _ranked(stats)
    console.print(
        f"{len(ranked)} of {len(stats.class_names)} classes present; "
        f"{sum(stats.pixels.values()):,} labelled pixels, {stats.ignore_pixels:,} ignore pixels."
    )
    if stats.unreadable:
        console.print(
            f"[yellow]{len(stats.unreadable)} masks could not be read and were skipped; "
            "run `cmi data validate`.[/yellow]"
        )
    # The bottom list never repeats a class already in the top list.
    least = ranked[max(top, len(ranked) - top) :][::-1]
    ends = [("Most common classes", ranked[:top])]
    if least:
        ends.append(("Least common classes", least))
    for title, rows in ends:
        table = Table(title=title, title_justify="left")
        table.add_column("id", justify="right")
        table.add_column("class")
        table.add_column("share", justify="right")
        for class_id, share in rows:
            table.add_row(str(class_id), stats.name(class_id), f"{share:.2%}")
        console.print(table)


def write_class_share_plot(stats: DatasetStats, png_path: Path) -> Path:
    """Write a horizontal bar chart of each present class's share of labelled pixels.

    Args:
        stats: What :func:`compute_stats` returned.
        png_path: The PNG to write; its folder is created. Written atomically.

    Returns:
        The path written.

    Raises:
        DataError: If no class has any labelled pixel.
    """
    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    ranked = _ranked(stats)
    if not ranked:
        raise DataError(f"{stats.root} has no labelled pixels to plot")
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    # Largest share on top: barh draws the first row at the bottom.
    rows = ranked[::-1]
    fig = Figure(figsize=(8, 1.2 + 0.22 * len(rows)))
    ax = fig.subplots()
    bars = ax.barh([stats.name(c) for c, _ in rows], [100 * s for _, s in rows], color="#d9822b")
    ax.bar_label(bars, fmt="%.1f%%", fontsize=6, padding=2)
    ax.set_xlabel("share of labelled pixels (%)")
    ax.set_title(f"Class shares: {len(rows)} classes, {sum(stats.images.values())} images")
    ax.tick_params(axis="y", labelsize=7)
    ax.margins(y=0.01)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return png_path
