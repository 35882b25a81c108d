"""Check every image/mask pair of a dataset and collect all problems before reporting.

Each pair must exist on both sides, decode completely (a truncated JPEG is a problem), have
equal sizes, a single-channel mask and only class ids in ``[0, num_classes)`` or 255 (ignore).
"""

from __future__ import annotations

import re
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
        file: The file at fault, relative to the dataset root (``FILE row N`` for a parquet
            row; the split folder for an empty split).
        fix: What to do about it.
    """

    split: str
    key: str
    kind: str
    detail: str
    file: str = ""
    fix: str = ""


# What to do about each kind of problem ({n} is the class count).
FIXES = {
    "missing-image": "add the image of this mask, or delete the mask",
    "missing-mask": "add the mask of this image, or delete the image",
    "undecodable-image": "replace the file with a complete copy, or delete the pair",
    "undecodable-mask": "replace the file with a complete copy, or delete the pair",
    "mask-not-single-channel": "save the mask as a one-channel PNG (mode L or P) of class ids",
    "size-mismatch": "resize the mask to the image's size (nearest neighbour), or fix the pair",
    "label-out-of-range": "relabel those pixels to a class id in 0..{last}, or 255 to ignore them",
    "empty-split": "add image/mask pairs to this split, or remove its empty folders",
}


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
                report.problems.append(_empty_split(source, split))
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

    def problem(kind: str, detail: str, path: Path | None) -> Problem:
        fix = FIXES[kind].format(last=num_classes - 1)
        return Problem(item.split, item.key, kind, detail, _relative(source, path, item.row), fix)

    if item.image is None:
        return [problem("missing-image", "the mask has no image", item.mask)], 0
    if item.mask is None:
        return [problem("missing-mask", "the image has no mask", item.image)], 0
    problems: list[Problem] = []
    image, failure = _open(source.read_image_bytes, item)
    if failure is not None:
        problems.append(problem(f"{failure[0]}-image", failure[1], item.image))
    mask, failure = _open(source.read_mask_bytes, item)
    if failure is not None:
        return [*problems, problem(f"{failure[0]}-mask", failure[1], item.mask)], 0
    assert mask is not None
    if len(mask.getbands()) != 1:
        detail = f"mask has mode {mask.mode}; expected one channel of class ids (L or P)"
        return [*problems, problem("mask-not-single-channel", detail, item.mask)], 0
    if image is not None and image.size != mask.size:
        w, h = image.size
        mw, mh = mask.size
        detail = f"image is {w}x{h}, mask is {mw}x{mh}"
        problems.append(problem("size-mismatch", detail, item.mask))
    counts = _label_counts(np.asarray(mask))
    bad = [(v, c) for v, c in counts.items() if (v < 0 or v >= num_classes) and v != IGNORE_INDEX]
    if bad:
        shown = ", ".join(f"{v} ({c} px)" for v, c in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        detail = f"ids {shown}{more} not in [0, {num_classes})"
        problems.append(problem("label-out-of-range", detail, item.mask))
    return problems, counts.get(IGNORE_INDEX, 0)


def _open(read: Any, item: Item) -> tuple[Any, tuple[str, str] | None]:
    """Read and open one side of a pair: ``(image, None)`` or ``(None, (kind, detail))``."""
    try:
        data = read(item)
    except DataError as exc:
        return None, ("missing", exc.message)
    if not data:
        return None, ("undecodable", "the file is empty (0 bytes)")
    try:
        return open_image(data), None
    except DECODE_ERRORS as exc:
        return None, ("undecodable", _decode_detail(exc, len(data)))


def _decode_detail(exc: BaseException, size: int) -> str:
    """Say why bytes did not decode, without Pillow's ``<_io.BytesIO object at 0x..>``."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return f"not an image format Pillow can read ({size} bytes)"
    text = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the file", str(exc)).strip()
    return f"cannot be decoded: {text or type(exc).__name__} ({size} bytes)"


def _relative(source: DatasetSource, path: Path | None, row: int = -1) -> str:
    if path is None:
        return ""
    try:
        name = Path(path).relative_to(source.root).as_posix()
    except ValueError:
        name = Path(path).as_posix()
    return f"{name} row {row}" if row >= 0 else name


def _empty_split(source: DatasetSource, split: str) -> Problem:
    folder = getattr(source, "img_dir", None)
    where = _relative(source, Path(folder) / split) if folder is not None else split
    return Problem(split, split, "empty-split", "no pairs", where, FIXES["empty-split"])


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
    for name in ("file", "check failed", "detail", "what to do"):
        table.add_column(name, overflow="fold")
    for p in report.problems[:_SHOWN_PROBLEMS]:
        table.add_row(p.file or p.key, f"[red]{p.kind}[/red]", p.detail, p.fix)
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
