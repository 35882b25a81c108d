"""Find out how a FoodSeg103 dataset is laid out on disk and read its image/mask pairs.

Two layouts are understood:

* the official folder layout: ``ROOT/Images/img_dir/{train,test}/*.jpg`` with masks in
  ``ROOT/Images/ann_dir/{train,test}/*.png`` (same stem) and ``ROOT/category_id.txt``;
* the Hugging Face parquet export: parquet files with ``image`` and ``label`` columns, each an
  image struct ``{bytes, path}``, split into ``train`` and ``validation`` (see ``parquet.py``).

Both are read through one :class:`DatasetSource` interface so validation, statistics and the
training dataset never care which layout they were given.
"""

from __future__ import annotations

from pathlib import Path

from cmi_cli.classes import load_class_names

# The shared interface and decoders live in ``source``; imported here as before by callers.
from cmi_cli.data.source import (  # noqa: F401
    DECODE_ERRORS,
    KNOWN_SPLITS,
    DatasetSource,
    Item,
    decode_image,
    decode_mask,
    mask_to_array,
    open_image,
    strict_decoding,
)
from cmi_cli.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIX = ".png"
LAYOUT_HINT = (
    "Expected ROOT/Images/img_dir/<split>/*.jpg with ROOT/Images/ann_dir/<split>/*.png, or the "
    "Hugging Face parquet export (train-*.parquet, validation-*.parquet); "
    "run `cmi data sample` for a small example or `cmi data pull` to fetch the tracked data"
)


class FolderSource(DatasetSource):
    """The official FoodSeg103 folder layout (``Images/img_dir`` + ``Images/ann_dir``)."""

    kind = "folder"

    def __init__(self, root: Path, images_dir: Path):
        super().__init__(root, load_class_names(root))
        self.img_dir = images_dir / "img_dir"
        self.ann_dir = images_dir / "ann_dir"

    def splits(self) -> list[str]:
        """Return the split folders present under ``img_dir`` or ``ann_dir``."""
        return [
            s for s in KNOWN_SPLITS if (self.img_dir / s).is_dir() or (self.ann_dir / s).is_dir()
        ]

    def items(self, split: str, include_incomplete: bool = False) -> list[Item]:
        """Return the pairs of a split, sorted by file stem (see :class:`DatasetSource`)."""
        self._check_split(split)
        images = _files_by_stem(self.img_dir / split, IMAGE_SUFFIXES)
        masks = _files_by_stem(self.ann_dir / split, (MASK_SUFFIX,))
        stems = (
            sorted(set(images) | set(masks))
            if include_incomplete
            else sorted(set(images) & set(masks))
        )
        return [Item(f"{split}/{s}", split, images.get(s), masks.get(s)) for s in stems]

    def read_image_bytes(self, item: Item) -> bytes:
        """Return the image file's bytes (see :class:`DatasetSource`)."""
        return _read_file(item.image, item.key, "image")

    def read_mask_bytes(self, item: Item) -> bytes:
        """Return the mask file's bytes (see :class:`DatasetSource`)."""
        return _read_file(item.mask, item.key, "mask")


def _files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {
        p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes and p.is_file()
    }


def _read_file(path: Path | None, key: str, what: str) -> bytes:
    if path is None:
        raise DataError(f"{key} has no {what}", hint="run `cmi data validate`")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def open_dataset(root: Path) -> DatasetSource:
    """Open a dataset root in whichever known layout it uses.

    Args:
        root: The dataset folder (holding ``Images/`` or parquet files).

    Returns:
        A source reading the folder layout or the parquet export.

    Raises:
        DataError: If the root is missing or in no known layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"dataset folder {root} does not exist",
            hint="run `cmi data pull`, `cmi data sample` or `cmi init` to get data",
        )
    for images_dir in (root / "Images", root):
        if (images_dir / "img_dir").is_dir() or (images_dir / "ann_dir").is_dir():
            source: DatasetSource = FolderSource(root, images_dir)
            if not source.splits():
                raise DataError(
                    f"{images_dir / 'img_dir'} has none of the splits {', '.join(KNOWN_SPLITS)}",
                    hint=LAYOUT_HINT,
                )
            return source
    from cmi_cli.data.parquet import ParquetSource, find_parquet_files

    files = find_parquet_files(root)
    if files:
        return ParquetSource(root, files)
    raise DataError(f"{root} is not a FoodSeg103 dataset in a known layout", hint=LAYOUT_HINT)


def default_val_split(source: DatasetSource) -> str:
    """Return the stored held-out split: ``test`` in the folder layout, else ``validation``.

    This is FoodSeg103's test set (the parquet export names it ``validation``); training
    validates on a share carved out of ``train`` instead (see :mod:`cmi_cli.data.split`).
    Falls back to the other name when only that one is present.
    """
    preferred = ["test", "validation"] if source.kind == "folder" else ["validation", "test"]
    present = source.splits()
    return next((s for s in preferred if s in present), preferred[0])
