"""An honest validation split: a fixed share of ``train`` carved out by a stable hash.

FoodSeg103 ships ``train`` and ``test`` only (the Hugging Face parquet export calls its test
split ``validation``). Picking checkpoints, stopping early or tuning on ``test`` would leak it
into the model, so validation is carved out of ``train`` instead:

* every training pair gets the sha1 of its name, read as a number: ``train/00017`` for the
  files ``train/00017.jpg`` and ``.png`` in the folder layout, and the same built from the
  image's stored file name in the parquet export (its row key ``train-00017`` when the export
  stores no file names);
* the ``round(fraction * n)`` pairs with the smallest numbers (at least :data:`MIN_VAL_ITEMS`
  while that is no more than a quarter of them, and never every pair) form the validation split named ``val``; the rest stay ``train``.

sha1 is the same on every machine and Python version (unlike ``hash()``), and ranking by it
ignores the order files are listed in. The split name says the fraction when it is not the
default, ``val@0.2`` for 20 %, so the name alone (stored in lineage, passed to
``cmi evaluate --split``) rebuilds the same set anywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmi_cli.data.layout import DatasetSource, Item, default_val_split, open_dataset
from cmi_cli.errors import DataError

VAL_SPLIT = "val"
DEFAULT_VAL_FRACTION = 0.1
MIN_VAL_ITEMS = 3
MAX_VAL_FRACTION = 0.5


def name_rank(name: str) -> int:
    """Return the sha1 of ``name`` as an integer (the order pairs are drawn for validation)."""
    return int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest(), "big")


def val_count(total: int, fraction: float) -> int:
    """Return how many of ``total`` training pairs go to validation.

    ``round(fraction * total)``, raised to :data:`MIN_VAL_ITEMS` (but to no more than a
    quarter of the pairs) so a small sample still has a few validation images, and to at
    least one; at least one pair is always left to train on.
    """
    if total < 2:
        return 0
    wanted = max(round(fraction * total), min(MIN_VAL_ITEMS, total // 4), 1)
    return min(total - 1, wanted)


def check_fraction(fraction: Any) -> float:
    """Return ``fraction`` as a float, or raise when it is not in ``(0, 0.5]``.

    Raises:
        DataError: If it is not a number in that range.
    """
    ok = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
    if not ok or not 0 < float(fraction) <= MAX_VAL_FRACTION:
        raise DataError(
            f"the validation fraction must be a number in (0, {MAX_VAL_FRACTION}], got {fraction!r}"
        )
    return float(fraction)


def carve_validation(
    items: Sequence[Item],
    fraction: float = DEFAULT_VAL_FRACTION,
    names: Mapping[str, str] | None = None,
) -> tuple[list[Item], list[Item]]:
    """Split training pairs into ``(train, validation)`` by the sha1 of their names.

    Both lists keep the input's order; which pairs land where depends only on the names.

    Args:
        items: The pairs of the training split.
        fraction: Share of pairs for validation, in ``(0, 0.5]``.
        names: Name per item key (:meth:`DatasetSource.pair_names`); default: the keys.

    Raises:
        DataError: If the fraction is out of range.
    """
    fraction = check_fraction(fraction)

    def name(item: Item) -> str:
        return names.get(item.key, item.key) if names else item.key

    ranked = sorted(items, key=lambda it: (name_rank(name(it)), name(it)))
    chosen = {it.key for it in ranked[: val_count(len(ranked), fraction)]}
    train = [it for it in items if it.key not in chosen]
    val = [it for it in items if it.key in chosen]
    return train, val


def names_digest(names: Iterable[str]) -> str:
    """Return a short sha1 of sorted names (which pairs a split holds)."""
    digest = hashlib.sha1()
    for name in sorted(names):
        digest.update(name.encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


def val_split_name(fraction: float = DEFAULT_VAL_FRACTION) -> str:
    """Return the split name of a carved validation set: ``val``, or ``val@F`` off default."""
    fraction = check_fraction(fraction)
    return VAL_SPLIT if fraction == DEFAULT_VAL_FRACTION else f"{VAL_SPLIT}@{fraction:g}"


def parse_val_split(name: str | None) -> float | None:
    """Return the fraction a carved split name stands for, or ``None`` for any other name.

    Raises:
        DataError: If the name starts ``val@`` but its fraction is not valid.
    """
    if name == VAL_SPLIT:
        return DEFAULT_VAL_FRACTION
    if name is None or not name.startswith(f"{VAL_SPLIT}@"):
        return None
    text = name.split("@", 1)[1]
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            f"split {name!r}: {text!r} is not a fraction", hint="e.g. val@0.2"
        ) from None
    return check_fraction(value)


@dataclass(frozen=True)
class ValidationCarve:
    """What was carved: recorded in lineage and shown by ``cmi data stats``.

    Attributes:
        split: The carved split's name (``val`` or ``val@F``).
        source_split: The split it was carved from (``train``).
        fraction: The configured share.
        count: Pairs in validation.
        train_count: Pairs left for training.
        digest: :func:`names_digest` of the validation pairs.
        method: How pairs were chosen, in words.
    """

    split: str
    source_split: str
    fraction: float
    count: int
    train_count: int
    digest: str
    method: str = "sha1 of each pair's name, smallest first"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready record."""
        return {
            "split": self.split,
            "from": self.source_split,
            "fraction": self.fraction,
            "count": self.count,
            "train_count": self.train_count,
            "names_sha1": self.digest,
            "method": self.method,
        }


class CarvedSource(DatasetSource):
    """A dataset whose training split is divided into ``train`` and a carved validation split.

    Items keep their keys and their stored split (``item.split`` stays ``train``), so they
    read from the files, or from the packed cache of the original split, as before.

    Args:
        inner: The dataset as stored.
        fraction: Share of the training pairs for validation.
        train_split: The split to carve from.
    """

    def __init__(
        self,
        inner: DatasetSource,
        fraction: float = DEFAULT_VAL_FRACTION,
        train_split: str = "train",
    ) -> None:
        super().__init__(inner.root, inner.class_names)
        self.inner = inner
        self.kind = inner.kind
        self.fraction = check_fraction(fraction)
        self.train_split = train_split
        self.val_name = val_split_name(self.fraction)
        if train_split not in inner.splits():
            raise DataError(
                f"{inner.root} has no {train_split!r} split to carve validation from "
                f"(it has: {', '.join(inner.splits()) or 'none'})",
                hint="set data.train_split, or name a stored split in data.val_split",
            )
        self._parts: tuple[list[Item], list[Item]] | None = None
        self._names: dict[str, str] = {}

    def _carved(self) -> tuple[list[Item], list[Item]]:
        if self._parts is None:
            self._names = self.inner.pair_names(self.train_split)
            items = self.inner.items(self.train_split)
            self._parts = carve_validation(items, self.fraction, self._names)
        return self._parts

    def splits(self) -> list[str]:
        """Return the stored splits with the carved one after the training split."""
        out = []
        for split in self.inner.splits():
            out.append(split)
            if split == self.train_split:
                out.append(self.val_name)
        return out

    def items(self, split: str, include_incomplete: bool = False) -> list[Item]:
        """Return a split's pairs; ``train`` without the carved ones (see the class)."""
        if split == self.val_name:
            return list(self._carved()[1])
        if split == self.train_split:
            return list(self._carved()[0])
        return self.inner.items(split, include_incomplete)

    def pair_names(self, split: str) -> dict[str, str]:
        """Return the stored dataset's names of a split's pairs."""
        if split in (self.val_name, self.train_split):
            self._carved()
            return {it.key: self._names.get(it.key, it.key) for it in self.items(split)}
        return self.inner.pair_names(split)

    def read_image_bytes(self, item: Item) -> bytes:
        """Return the encoded image of an item (from the stored dataset)."""
        return self.inner.read_image_bytes(item)

    def read_mask_bytes(self, item: Item) -> bytes:
        """Return the encoded mask of an item (from the stored dataset)."""
        return self.inner.read_mask_bytes(item)

    def carve(self) -> ValidationCarve:
        """Return the record of what was carved."""
        train, val = self._carved()
        digest = names_digest(self._names.get(it.key, it.key) for it in val)
        return ValidationCarve(
            self.val_name, self.train_split, self.fraction, len(val), len(train), digest
        )

    def __repr__(self) -> str:
        return f"CarvedSource({self.inner!r}, {self.val_name!r})"


def default_test_split(source: DatasetSource) -> str:
    """Return the held-out test split: ``test``, or ``validation`` in the parquet export.

    The Hugging Face export of FoodSeg103 names its test split ``validation``; it is the
    official test set, never used to pick checkpoints.
    """
    inner = source.inner if isinstance(source, CarvedSource) else source
    return default_val_split(inner)


def open_split(
    root: Path,
    split: str | None = None,
    hint: str = "Pass a split the dataset has",
    train_split: str = "train",
) -> tuple[DatasetSource, str]:
    """Open a dataset and name the split to read; ``val``/``val@F`` is the carved split.

    Args:
        root: The dataset folder.
        split: A stored split, a carved one, or ``None`` for the test split.
        hint: What to tell the user when the split does not exist.
        train_split: The split a carved split comes out of.

    Returns:
        The source (carved when asked for a carved split) and the split's name.

    Raises:
        DataError: If the dataset is missing or has no such split.
    """
    source = open_dataset(Path(root))
    fraction = parse_val_split(split)
    if fraction is not None:
        carved = CarvedSource(source, fraction, train_split)
        return carved, carved.val_name
    split = split or default_test_split(source)
    if split not in source.splits():
        raise DataError(
            f"dataset {root} has no {split!r} split (it has: {', '.join(source.splits())})",
            hint=f"{hint} (or val for the validation share of train)",
        )
    return source, split
