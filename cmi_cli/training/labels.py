"""Find and name a mask whose class id is out of range, met while training.

Batches carry no file names, so the check is split: the module tests each batch's largest id
(one reduction), and only when one is out of range does this module scan the split's masks
for it, to say which file to fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cmi_cli.errors import DataError


def describe_item(source: Any, item: Any) -> str:
    """Name an item's mask for a person: a path relative to the dataset, or file and row."""
    mask = Path(item.mask) if item.mask is not None else None
    if mask is None:
        return str(item.key)
    try:
        name = mask.relative_to(source.root).as_posix()
    except ValueError:
        name = mask.as_posix()
    return f"{name} row {item.row}" if item.row >= 0 else name


def find_label(dataset: Any, label: int) -> str | None:
    """Return the first mask of ``dataset`` that holds ``label``, named by :func:`describe_item`.

    Args:
        dataset: A :class:`~cmi_cli.data.dataset.SegmentationDataset`.
        label: The class id to look for.
    """
    from cmi_cli.data.layout import decode_mask

    source = dataset.source
    for item in dataset.items:
        try:
            mask = decode_mask(source.read_mask_bytes(item), item.key)
        except DataError:
            continue
        if np.any(mask == label):
            return describe_item(source, item)
    return None


def bad_label_error(
    label: int, num_classes: int, ignore_index: int, dataset: Any, split: str
) -> DataError:
    """The one-line error for a class id outside ``0..num_classes-1`` in split ``split``."""
    where = find_label(dataset, label) if dataset is not None else None
    named = f"mask {where} of split {split!r}" if where else f"a mask of split {split!r}"
    root = getattr(getattr(dataset, "source", None), "root", None)
    target = f" {root}" if root is not None else ""
    return DataError(
        f"{named} has label {label}, outside 0..{num_classes - 1} (and not the ignore id "
        f"{ignore_index})",
        hint=f"run `cmi data validate{target}` and fix or remove the files it reports",
    )
