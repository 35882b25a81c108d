"""Find the photos a ``cmi predict`` run covers, in a stable order, and read their bytes.

A SOURCE is an image file, a folder (searched recursively), a glob pattern, a text file that
lists paths (one a line), or a parquet file with an ``image`` column (the Hugging Face export of
FoodSeg103). Each photo becomes a :class:`PhotoRef`, small and picklable, so worker processes
read the bytes themselves. What cannot be found is reported, not fatal.
"""

from __future__ import annotations

import glob
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmi_cli.errors import UsageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class PhotoRef:
    """One photo: a file, or a row of a parquet file.

    Attributes:
        path: The absolute image file, or the parquet file holding the row.
        row: The row in the parquet file; ``-1`` for an image file.
    """

    path: str
    row: int = -1

    @property
    def key(self) -> str:
        """The photo's name in the table and the errors file (``file.parquet#12`` for rows)."""
        return self.path if self.row < 0 else f"{self.path}#{self.row}"

    @property
    def out_name(self) -> str:
        """A file stem for this photo's outputs, unique per photo and stable across runs.

        The readable stem alone would collide (``a/1.jpg``, ``b/1.jpg``, ``1.png``); a short
        hash of the full key keeps names apart without depending on the other sources given,
        so ``--resume`` finds the same names whatever the order of SOURCE arguments.
        """
        stem = Path(self.path).stem if self.row < 0 else f"{Path(self.path).stem}-{self.row}"
        digest = hashlib.sha1(self.key.encode("utf-8")).hexdigest()[:10]
        return f"{_UNSAFE.sub('_', stem)[:80]}-{digest}"


@dataclass
class Discovery:
    """The photos found, in order, and the entries that could not be used."""

    photos: list[PhotoRef] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (entry, reason)


def is_image_file(path: Path) -> bool:
    """Whether a file's suffix names an image format ``cmi predict`` reads."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def _folder(root: Path, exclude: Path | None) -> list[PhotoRef]:
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).parts
        if any(part.startswith(".") for part in rel) or not is_image_file(path):
            continue
        if exclude is not None and path.is_relative_to(exclude):
            continue  # our own masks and overlays, when --out lies inside a SOURCE folder
        if path.is_file():
            found.append(path)
    return [PhotoRef(str(p)) for p in sorted(found)]


def _parquet(path: Path) -> list[PhotoRef]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"{path} is not a readable parquet file ({exc})") from None
    if "image" not in handle.schema_arrow.names:
        raise UsageError(
            f"{path} has no 'image' column (columns: {', '.join(handle.schema_arrow.names)})",
            hint="Expected the Hugging Face FoodSeg103 export (image and label columns)",
        )
    return [PhotoRef(str(path), row) for row in range(handle.metadata.num_rows)]


def _list_file(path: Path, out: Discovery) -> None:
    for lineno, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        target = Path(entry).expanduser()
        if not target.is_absolute():
            target = path.parent / target
        if target.is_file():
            out.photos.append(PhotoRef(str(target.absolute())))
        else:
            out.missing.append((entry, f"not found (listed in {path}:{lineno})"))


def discover(sources: Sequence[str], exclude: Path | None = None) -> Discovery:
    """Expand SOURCE arguments into photos, in argument order, each folder sorted by path.

    A photo named twice (a file inside a folder also given) is kept once, at its first place.

    Args:
        sources: Files, folders, glob patterns, list files (``.txt``) or parquet files.
        exclude: A folder whose files a folder SOURCE skips (the output folder).

    Returns:
        The photos and the entries that could not be found (path, reason).

    Raises:
        UsageError: If a SOURCE does not exist and is not a glob, or a parquet file is not
            readable.
    """
    out = Discovery()
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            out.photos += _folder(path.absolute(), exclude and exclude.absolute())
        elif path.is_file() and path.suffix.lower() == ".parquet":
            out.photos += _parquet(path.absolute())
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            _list_file(path.absolute(), out)
        elif path.is_file():
            # Named explicitly: tried whatever its suffix; a non-image lands in the errors file.
            out.photos.append(PhotoRef(str(path.absolute())))
        elif _GLOB_CHARS.search(source):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            out.photos += [PhotoRef(str(m.absolute())) for m in matches if m.is_file()]
        else:
            raise UsageError(
                f"SOURCE {source} does not exist",
                hint="Give image files, folders, glob patterns, a .txt list or a .parquet file",
            )
    seen: set[PhotoRef] = set()
    unique = []
    for ref in out.photos:
        if ref not in seen:
            seen.add(ref)
            unique.append(ref)
    out.photos = unique
    return out


class PhotoReader:
    """Reads a photo's bytes; keeps parquet files and their last row group open (per process).

    Parquet cells are read one row group at a time, only the ``image`` column, so a split of
    thousands of photos never sits in memory at once.
    """

    def __init__(self) -> None:
        self._files: dict[str, Any] = {}
        self._group: tuple[str, int, Any] | None = None

    def read(self, ref: PhotoRef) -> bytes:
        """Return the encoded bytes of a photo.

        Raises:
            OSError: If the file cannot be read.
            ValueError: If a parquet row holds no image.
        """
        if ref.row < 0:
            return Path(ref.path).read_bytes()
        group, row = self._locate(ref)
        if self._group is None or self._group[:2] != (ref.path, group):
            table = self._files[ref.path].read_row_group(group, columns=["image"])
            self._group = (ref.path, group, table.column("image"))
        value = self._group[2][row].as_py()
        if isinstance(value, dict):  # the image struct {bytes, path}
            data, other = value.get("bytes"), value.get("path")
            if not data and other:
                target = Path(other) if Path(other).is_absolute() else Path(ref.path).parent / other
                data = target.read_bytes()
            value = data
        if not isinstance(value, bytes) or not value:
            raise ValueError(f"row {ref.row} of {ref.path} holds no image bytes")
        return value

    def _locate(self, ref: PhotoRef) -> tuple[int, int]:
        if ref.path not in self._files:
            import pyarrow.parquet as pq

            self._files[ref.path] = pq.ParquetFile(ref.path)
        meta, row = self._files[ref.path].metadata, ref.row
        for group in range(meta.num_row_groups):
            size = meta.row_group(group).num_rows
            if row < size:
                return group, row
            row -= size
        raise ValueError(f"row {ref.row} is past the end of {ref.path}")
