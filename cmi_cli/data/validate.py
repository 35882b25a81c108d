"""Check every image/mask pair of a dataset and collect all problems before reporting.

Each pair must exist on both sides, decode completely (a truncated JPEG is a problem), have
equal sizes, a single-channel mask and only class ids in ``[0, num_classes)`` or 255 (ignore).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cmi_cli.classes import IGNORE_INDEX
from cmi_cli.console import err_console, is_quiet
from cmi_cli.data.layout import DECODE_ERRORS, DatasetSource, Item, open_dataset, open_image
from cmi_cli.errors import DataError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

_SHOWN_PROBLEMS = 50


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one pair.

    Attributes:
        split: The split of the pair.
        key: The pair's stable id.
        kind: A short code: ``missing-image``, ``missing-mask``, ``undecodable-image``,
            ``undecodable-mask``, ``mask-not-single-channel``, ``size-mismatch``,
            ``label-out-of-range`` or ``empty-split``.
        detail: What exactly is wrong, for a person.
    """

    split: str
    key: str
    kind: str
    detail: str


@dataclass
class ValidationReport:
    """The outcome of :func:`validate_dataset`.

    Attributes:
        root: The dataset root checked.
        layout: ``folder`` or ``parquet``.
        num_classes: Labels must lie in ``[0, num_classes)`` (255 is allowed as ignore).
        problems: Every problem found, in dataset order.
        checked: Number of pairs (or lone files) looked at per split.
        ignore_pixels: Mask pixels equal to 255 over all splits.
    """

    root: str
    layout: str
    num_classes: int
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    ignore_pixels: int = 0

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Return the number of problems of each kind."""
        return dict(Counter(p.kind for p in self.problems))

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "root": self.root,
            "layout": self.layout,
            "num_classes": self.num_classes,
            "ok": self.ok,
            "checked": dict(self.checked),
            "ignore_pixels": self.ignore_pixels,
            "problem_counts": self.counts(),
            "problems": [asdict(p) for p in self.problems],
        }


def validate_dataset(
    root: Path, num_classes: int | None = None, show_progress: bool = True
) -> ValidationReport:
    """Check every pair of every split of a dataset.

    Args:
        root: The dataset root, in either known layout.
        num_classes: Labels must be below this; defaults to the dataset's class count.
        show_progress: Show a progress bar on stderr (never under ``--quiet``).

    Returns:
        A report listing every problem; the dataset is usable when ``report.ok``.

    Raises:
        DataError: If the root is missing or not a known layout.
        UsageError: If ``num_classes`` is not in 1..256.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    source = open_dataset(Path(root))
    n = len(source.class_names) if num_classes is None else num_classes
    if not 1 <= n <= 256:
        raise UsageError(f"num_classes must be between 1 and 256, got {n}")
    report = ValidationReport(str(root), source.kind, n)
    work = {split: source.items(split, include_incomplete=True) for split in source.splits()}
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(
        *columns, console=err_console(), disable=not show_progress or is_quiet(), transient=True
    ) as progress:
        for split, items in work.items():
            report.checked[split] = len(items)
            if not items:
                report.problems.append(Problem(split, split, "empty-split", "no pairs"))
                continue
            task = progress.add_task(f"checking {split}", total=len(items))
            for item in items:
                problems, ignored = check_pair(source, item, n)
                report.problems.extend(problems)
                report.ignore_pixels += ignored
                progress.advance(task)
    return report


def check_pair(source: DatasetSource, item: Item, num_classes: int) -> tuple[list[Problem], int]:
    """Check one pair; return its problems and its number of ignore (255) pixels."""

    def problem(kind: str, detail: str) -> Problem:
        return Problem(item.split, item.key, kind, detail)

    if item.image is None:
        return [problem("missing-image", f"mask {item.mask} has no image")], 0
    if item.mask is None:
        return [problem("missing-mask", f"image {item.image} has no mask")], 0
    problems: list[Problem] = []
    try:
        image = open_image(source.read_image_bytes(item))
    except DataError as exc:
        problems.append(problem("missing-image", exc.message))
        image = None
    except DECODE_ERRORS as exc:
        problems.append(problem("undecodable-image", str(exc)))
        image = None
    try:
        mask = open_image(source.read_mask_bytes(item))
    except DataError as exc:
        return [*problems, problem("missing-mask", exc.message)], 0
    except DECODE_ERRORS as exc:
        return [*problems, problem("undecodable-mask", str(exc))], 0
    if len(mask.getbands()) != 1:
        detail = f"mask has mode {mask.mode}; expected one channel of class ids (L or P)"
        return [*problems, problem("mask-not-single-channel", detail)], 0
    if image is not None and image.size != mask.size:
        w, h = image.size
        mw, mh = mask.size
        problems.append(problem("size-mismatch", f"image is {w}x{h}, mask is {mw}x{mh}"))
    counts = _label_counts(np.asarray(mask))
    bad = [(v, c) for v, c in counts.items() if (v < 0 or v >= num_classes) and v != IGNORE_INDEX]
    if bad:
        shown = ", ".join(f"{v} ({c} px)" for v, c in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        problems.append(
            problem("label-out-of-range", f"ids {shown}{more} not in [0, {num_classes})")
        )
    return problems, counts.get(IGNORE_INDEX, 0)


def _label_counts(arr: np.ndarray) -> dict[int, int]:
    """Return pixels per label value present (bincount is far faster than unique for uint8)."""
    if arr.dtype == np.bool_ or arr.dtype == np.uint8:
        counts = np.bincount(arr.ravel().astype(np.uint8), minlength=256)
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    values, counts = np.unique(arr, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def render_validation(report: ValidationReport, console: Console) -> None:
    """Print a table of problems, or a one-line green summary when there are none."""
    from rich.table import Table

    total = sum(report.checked.values())
    per_split = ", ".join(f"{s}: {n}" for s, n in report.checked.items())
    ignore = f"{report.ignore_pixels:,} ignore (255) pixels"
    if report.ok:
        console.print(
            f"[green]✓[/green] {total} pairs checked ({per_split}) in {report.root} "
            f"({report.layout} layout): no problems; {ignore}."
        )
        return
    table = Table(title=f"Problems in {report.root}", title_justify="left")
    for name in ("split", "key", "problem", "detail"):
        table.add_column(name, overflow="fold")
    for p in report.problems[:_SHOWN_PROBLEMS]:
        table.add_row(p.split, p.key, f"[red]{p.kind}[/red]", p.detail)
    console.print(table)
    if len(report.problems) > _SHOWN_PROBLEMS:
        console.print(
            f"... and {len(report.problems) - _SHOWN_PROBLEMS} more "
            "(the JSON report lists them all)"
        )
    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(report.counts().items()))
    console.print(
        f"[red]✗[/red] {len(report.problems)} problems in {total} pairs ({per_split}): "
        f"{kinds}; {ignore}."
    )
