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

import io
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from cmi_cli.classes import load_class_names
from cmi_cli.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIX = ".png"
KNOWN_SPLITS = ("train", "validation", "test")
LAYOUT_HINT = (
    "Expected ROOT/Images/img_dir/<split>/*.jpg with ROOT/Images/ann_dir/<split>/*.png, or the "
    "Hugging Face parquet export (train-*.parquet, validation-*.parquet); "
    "run `cmi data sample` for a small example or `cmi data pull` to fetch the tracked data"
)
# Errors Pillow raises for broken or hostile files; anything else is a bug worth a traceback.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class Item:
    """One image/mask pair of a split.

    Attributes:
        key: A stable id, unique within the dataset (``train/00001`` or ``train-00012``).
        split: The split the pair belongs to.
        image: The image file (folder layout) or the parquet file holding the row; ``None``
            when the image is missing.
        mask: The mask file or the parquet file holding the row; ``None`` when missing.
        row: Row index inside the parquet file (``-1`` in the folder layout).
    """

    key: str
    split: str
    image: Path | None
    mask: Path | None
    row: int = -1

    @property
    def complete(self) -> bool:
        """Whether both the image and the mask are present."""
        return self.image is not None and self.mask is not None


@contextmanager
def strict_decoding() -> Iterator[None]:
    """Make Pillow raise on truncated files while the block runs.

    Another library in the process may have switched ``LOAD_TRUNCATED_IMAGES`` on, which would
    turn a cut-off JPEG into a silently grey image.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def open_image(data: bytes) -> Image.Image:
    """Open and fully decode encoded image bytes.

    Raises:
        OSError, SyntaxError, ValueError: As Pillow does for undecodable data.
    """
    with strict_decoding():
        img = Image.open(io.BytesIO(data))
        img.load()
    return img


def decode_image(data: bytes, key: str) -> np.ndarray:
    """Decode image bytes to an ``HxWx3`` uint8 RGB array.

    Raises:
        DataError: If the bytes are not a complete image.
    """
    try:
        img = open_image(data)
    except DECODE_ERRORS as exc:
        raise DataError(
            f"image {key} cannot be decoded ({exc})", hint="run `cmi data validate`"
        ) from exc
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def mask_to_array(img: Image.Image, key: str) -> np.ndarray:
    """Return the class ids of a decoded single-channel mask as an ``HxW`` uint8 array.

    Raises:
        DataError: If the mask has several channels or ids above 255.
    """
    if len(img.getbands()) != 1:
        raise DataError(
            f"mask {key} has mode {img.mode}; expected one channel of class ids",
            hint="run `cmi data validate`",
        )
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(f"mask {key} holds ids outside 0..255", hint="run `cmi data validate`")
        arr = arr.astype(np.uint8)
    return arr


def decode_mask(data: bytes, key: str) -> np.ndarray:
    """Decode mask bytes to an ``HxW`` uint8 array of class ids.

    Raises:
        DataError: If the bytes are not a complete single-channel image.
    """
    try:
        img = open_image(data)
    except DECODE_ERRORS as exc:
        raise DataError(
            f"mask {key} cannot be decoded ({exc})", hint="run `cmi data validate`"
        ) from exc
    return mask_to_array(img, key)


class DatasetSource(ABC):
    """A dataset on disk in one of the known layouts."""

    kind: str = ""

    def __init__(self, root: Path, class_names: list[str]):
        self.root = root
        self.class_names = class_names

    @abstractmethod
    def splits(self) -> list[str]:
        """Return the splits present, in the order train, validation, test."""

    @abstractmethod
    def items(self, split: str, include_incomplete: bool = False) -> list[Item]:
        """Return the pairs of a split in a stable order.

        Args:
            split: A name from :meth:`splits`.
            include_incomplete: Also return images without masks and masks without images
                (for validation); training never wants them.

        Raises:
            DataError: If the split does not exist.
        """

    def pair_names(self, split: str) -> dict[str, str]:
        """Return a stable name per item key of a split (what the validation hash reads).

        The key itself here: ``train/00017`` names the files in the folder layout.
        """
        return {item.key: item.key for item in self.items(split)}

    @abstractmethod
    def read_image_bytes(self, item: Item) -> bytes:
        """Return the encoded image of an item as stored.

        Raises:
            DataError: If the image is missing.
        """

    @abstractmethod
    def read_mask_bytes(self, item: Item) -> bytes:
        """Return the encoded mask of an item as stored.

        Raises:
            DataError: If the mask is missing.
        """

    def read(self, item: Item) -> tuple[np.ndarray, np.ndarray]:
        """Decode an item to ``(image HxWx3 uint8 RGB, mask HxW uint8)``.

        Raises:
            DataError: If either part is missing or undecodable, or their sizes differ.
        """
        image = decode_image(self.read_image_bytes(item), item.key)
        mask = decode_mask(self.read_mask_bytes(item), item.key)
        if image.shape[:2] != mask.shape:
            raise DataError(
                f"{item.key}: image is {image.shape[1]}x{image.shape[0]} but mask is "
                f"{mask.shape[1]}x{mask.shape[0]}",
                hint="run `cmi data validate`",
            )
        return image, mask

    def _check_split(self, split: str) -> None:
        if split not in self.splits():
            present = ", ".join(self.splits()) or "none"
            raise DataError(
                f"{self.root} has no split {split!r} (it has: {present})",
                hint="pick one of those splits in the data config",
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


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


def open_split(
    root: Path, split: str | None = None, hint: str = "Pass a split the dataset has"
) -> tuple[DatasetSource, str]:
    """Open a dataset and name the split to read (default: its test split).

    ``val`` (or ``val@F``) names the validation share carved out of ``train``; see
    :func:`cmi_cli.data.split.open_split`.

    Raises:
        DataError: If the dataset is missing or has no such split.
    """
    from cmi_cli.data.split import open_split as open_any_split

    return open_any_split(root, split, hint)
