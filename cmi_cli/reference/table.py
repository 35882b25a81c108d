"""Feature tables: a model's reference, and the current data it is compared with.

A table is one row per image of numbers only: the image features of
:func:`~cmi_cli.reference.features.image_features`, and, when a model made predictions, the
prediction features (``mean_confidence``, ``p10_confidence``, ``mean_entropy``,
``num_classes_present``) and the pixel shares of the reference's most common classes
(``share_<class name>``). It is saved as CSV so the server reads it with the standard library.
Where a model keeps its reference is :mod:`cmi_cli.export.reference`'s business.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmi_cli.errors import DataError
from cmi_cli.reference.features import image_features, prediction_features

REFERENCE_NAME = "reference.csv"
IMAGE_COLUMNS = (
    "width", "height", "aspect", "brightness", "contrast", "saturation", "colourfulness",
    "sharpness", "hue_mean", "hue_std",
)  # fmt: skip
PREDICTION_COLUMNS = ("mean_confidence", "p10_confidence", "mean_entropy", "num_classes_present")
SHARE_PREFIX = "share_"
DEFAULT_TOP_CLASSES = 5

Predict = Callable[[np.ndarray], np.ndarray]
Corrupt = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class FeatureTable:
    """Rows of named numbers, one per image.

    Attributes:
        columns: Column names, in order.
        rows: One dict per image (every column present, floats).
        source: Where the rows came from, for messages and reports.
    """

    columns: list[str]
    rows: list[dict[str, float]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def has_predictions(self) -> bool:
        """Whether the table holds prediction features."""
        return "mean_confidence" in self.columns

    @property
    def share_classes(self) -> list[str]:
        """Class names of the ``share_*`` columns."""
        return [c[len(SHARE_PREFIX) :] for c in self.columns if c.startswith(SHARE_PREFIX)]

    def column(self, name: str) -> np.ndarray:
        """Return one column as a float64 array."""
        return np.array([r[name] for r in self.rows], dtype=np.float64)

    def subset(self, start: int, stop: int) -> FeatureTable:
        """Return rows ``start:stop`` as a new table."""
        return FeatureTable(list(self.columns), self.rows[start:stop], self.source)

    def to_csv(self) -> str:
        """Return the table as CSV text (a header, then ``repr``-exact floats)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([repr(float(row[c])) for c in self.columns])
        return buf.getvalue()


def prediction_row(
    logits: np.ndarray, class_names: Sequence[str], share_classes: Iterable[str] | None = None
) -> dict[str, Any]:
    """Return the prediction features of ``[C, H, W]`` logits, with all class shares.

    The ``class_shares`` dict (classes present only) is kept as is; :func:`flatten_row` turns it
    into ``share_*`` columns once the reference's classes are known.
    """
    feats = prediction_features(logits, class_names)
    row: dict[str, Any] = {c: float(feats[c]) for c in PREDICTION_COLUMNS}
    row["class_shares"] = feats["class_shares"]
    if share_classes is not None:
        row = flatten_row(row, share_classes)
    return row


def flatten_row(row: dict[str, Any], share_classes: Iterable[str]) -> dict[str, Any]:
    """Replace ``class_shares`` (name -> share) by one ``share_<name>`` column per class."""
    shares = row.get("class_shares") or {}
    out = {k: v for k, v in row.items() if k != "class_shares"}
    for name in share_classes:
        out[SHARE_PREFIX + name] = float(shares.get(name, 0.0))
    return out


def top_classes(rows: Sequence[dict[str, Any]], k: int = DEFAULT_TOP_CLASSES) -> list[str]:
    """Return the ``k`` classes with the largest mean pixel share over ``rows``."""
    totals: dict[str, float] = {}
    for row in rows:
        for name, share in (row.get("class_shares") or {}).items():
            totals[name] = totals.get(name, 0.0) + float(share)
    return [n for n, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def table_from_rows(
    rows: Sequence[dict[str, Any]],
    share_classes: Sequence[str] | None = None,
    top_k: int = DEFAULT_TOP_CLASSES,
    source: str = "",
) -> FeatureTable:
    """Build a table from rows of image (and prediction) features with ``class_shares`` dicts.

    Args:
        rows: Dicts with the image columns and, optionally, the prediction columns and
            ``class_shares``.
        share_classes: Classes to give ``share_*`` columns; default: the ``top_k`` most common
            in ``rows`` (when they hold predictions).
        top_k: How many classes to pick when ``share_classes`` is None.
        source: Where the rows came from.
    """
    with_pred = bool(rows) and all("mean_confidence" in r for r in rows)
    columns = list(IMAGE_COLUMNS)
    if with_pred:
        columns += list(PREDICTION_COLUMNS)
        if share_classes is None:
            share_classes = top_classes(rows, top_k)
        columns += [SHARE_PREFIX + n for n in share_classes]
    flat = []
    for row in rows:
        full = flatten_row(row, share_classes or []) if with_pred else dict(row)
        flat.append({c: float(full[c]) for c in columns})
    return FeatureTable(columns, flat, source)


def table_from_log(
    records: Sequence[dict[str, Any]], share_classes: Sequence[str] | None = None, source: str = ""
) -> FeatureTable:
    """Turn prediction-log records (``cmi_cli.serving.store.read_predictions``) into a table.

    Raises:
        DataError: If a record lacks the fields the log writes.
    """
    rows = []
    for i, rec in enumerate(records):
        try:
            feats = rec["image_features"]
            shares = rec["class_shares"]
            row: dict[str, Any] = {c: float(feats[c]) for c in IMAGE_COLUMNS}
            row.update({c: float(rec[c]) for c in PREDICTION_COLUMNS if c in rec})
            row["num_classes_present"] = float(len(shares))
            row["class_shares"] = {str(k): float(v) for k, v in shares.items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(
                f"prediction record {i} of {source or 'the log'} is malformed ({exc!r} missing "
                "or invalid)",
                hint="Point --current at a log written by 'cmi serve'",
                exit_code=2,
            ) from None
        rows.append(row)
    return table_from_rows(rows, share_classes=share_classes or [], source=source)


def compute_features(
    data_root: Path,
    split: str | None = None,
    *,
    lineage: dict[str, Any] | None = None,
    predict: Predict | None = None,
    share_classes: Sequence[str] | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    corrupt: Corrupt | None = None,
    on_batch: Callable[[np.ndarray, np.ndarray], None] | None = None,
    show_progress: bool = True,
) -> FeatureTable:
    """Compute the feature table of a dataset split, optionally with a model's predictions.

    Args:
        data_root: A dataset in a layout :func:`~cmi_cli.data.layout.open_dataset` reads.
        split: Split name; default the layout's validation split.
        lineage: The model's lineage (preprocessing and class names); needed with ``predict``.
        predict: Maps a normalised float32 ``[N, 3, S, S]`` batch to ``[N, C, S, S]`` logits.
        share_classes: Classes for ``share_*`` columns; default the most common predicted ones.
        batch_size: Images per ``predict`` call.
        limit: Use at most this many images (the first ones, in the split's order).
        corrupt: ``corrupt(rgb, index) -> rgb`` applied to each photo before anything else.
        on_batch: Called with ``(logits, masks)`` of each batch (masks resized to ``S``), so a
            caller can score the same forward pass.
        show_progress: Show a progress bar on stderr (never under ``--quiet``).

    Raises:
        DataError: If the dataset or split is missing or empty.
    """
    from rich.progress import Progress

    from cmi_cli.console import err_console, is_quiet
    from cmi_cli.data.split import open_split
    from cmi_cli.data.transforms import normalize, resize_image, resize_mask

    source, split = open_split(Path(data_root), split)
    items = [it for it in source.items(split) if it.complete][:limit]
    if not items:
        raise DataError(f"split {split!r} of {data_root} has no images", hint="Check the dataset")
    if predict is not None and lineage is None:
        raise ValueError("compute_features needs the model's lineage to run predict")
    pre = (lineage or {}).get("preprocessing") or {}
    class_names = list((lineage or {}).get("class_names") or [])
    rows: list[dict[str, Any]] = []
    batch: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]] = []

    def flush() -> None:
        if not batch:
            return
        size = int(pre["image_size"])
        x = np.stack([normalize(resize_image(rgb, size, size), pre["mean"], pre["std"])
                      for rgb, _, _ in batch])  # fmt: skip
        logits = np.asarray(predict(x))  # type: ignore[misc]
        if on_batch is not None:
            masks = np.stack([resize_mask(m, size, size).astype(np.int64) for _, m, _ in batch])
            on_batch(logits, masks)
        for (_, _, row), scores in zip(batch, logits, strict=True):
            row.update(prediction_row(scores, class_names))
        batch.clear()

    label = f"features of {split}" + (" with predictions" if predict else "")
    with Progress(
        console=err_console(), transient=True, disable=is_quiet() or not show_progress
    ) as bar:
        task = bar.add_task(label, total=len(items))
        for index, item in enumerate(items):
            rgb, mask = source.read(item)
            if corrupt is not None:
                rgb = corrupt(rgb, index)
            row: dict[str, Any] = dict(image_features(rgb))
            rows.append(row)
            if predict is not None:
                batch.append((rgb, mask, row))
                if len(batch) >= batch_size:
                    flush()
            bar.advance(task)
        if predict is not None:
            flush()
    where = f"{data_root}:{split}" + (" (corrupted)" if corrupt else "")
    return table_from_rows(rows, share_classes=share_classes, source=where)


def save_table(table: FeatureTable, path: Path) -> Path:
    """Write ``table`` as CSV atomically and return the path."""
    from cmi_cli.utils.files import atomic_write_text

    return atomic_write_text(Path(path), table.to_csv())


def load_table(path: Path) -> FeatureTable:
    """Read a feature CSV written by :func:`save_table` (standard library only).

    Raises:
        DataError: If the file is missing, empty, or holds a non-number (exit status 2).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"feature file {path} does not exist", hint="Check the path", exit_code=2)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = []
            for line_no, values in enumerate(reader, start=2):
                if not values:
                    continue
                if len(values) != len(header or []):
                    raise ValueError(f"line {line_no} has {len(values)} fields")
                rows.append(
                    {c: _number(v, line_no) for c, v in zip(header or [], values, strict=True)}
                )
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(
            f"{path} is not a feature table ({exc})",
            hint="Use a reference.csv written by 'cmi train' or 'cmi export onnx'",
            exit_code=2,
        ) from None
    if not header or not set(IMAGE_COLUMNS) & set(header):
        raise DataError(
            f"{path} has no feature columns",
            hint="Use a reference.csv written by 'cmi train' or 'cmi export onnx'",
            exit_code=2,
        )
    return FeatureTable(list(header), rows, str(path))


def _number(text: str, line_no: int) -> float:
    value = float(text)
    if math.isnan(value):
        raise ValueError(f"line {line_no} holds NaN")
    return value
