"""Read the Hugging Face parquet export of FoodSeg103 without loading it all at once.

Each row holds an ``image`` and a ``label`` column, both image structs ``{bytes, path}``.
Rows are read one row group at a time and only the cell asked for becomes a Python object,
so a split of thousands of photos never sits in memory as Python bytes.
pyarrow is imported inside functions: the CLI starts without it.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

from cmi_cli.classes import load_class_names
from cmi_cli.data.layout import KNOWN_SPLITS, DatasetSource, Item
from cmi_cli.errors import DataError

COLUMNS = ("image", "label")
# Names the Hugging Face hub and hand-made exports use for each split.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "test": "test",
}
_CACHED_GROUPS = 4


def split_of(path: Path, root: Path) -> str | None:
    """Return the split a parquet file belongs to, from its name or its folders.

    ``train-00000-of-00003.parquet``, ``validation.parquet`` and ``train/0000.parquet`` all name
    their split; a file that names none returns ``None``.
    """
    first = re.split(r"[-_.]", path.name.lower(), maxsplit=1)[0]
    if first in SPLIT_ALIASES:
        return SPLIT_ALIASES[first]
    for parent in path.relative_to(root).parents:
        if parent.name.lower() in SPLIT_ALIASES:
            return SPLIT_ALIASES[parent.name.lower()]
    return None


def find_parquet_files(root: Path) -> dict[str, list[Path]]:
    """Return the parquet files under ``root`` grouped by split, each list sorted by path."""
    found: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*.parquet")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        split = split_of(path, root)
        if split is not None:
            found.setdefault(split, []).append(path)
    return {s: found[s] for s in KNOWN_SPLITS if s in found}


def _class_names(root: Path) -> list[str]:
    # The hub export ships id2label.json instead of category_id.txt.
    id2label = root / "id2label.json"
    if not (root / "category_id.txt").is_file() and id2label.is_file():
        try:
            mapping = {int(k): str(v) for k, v in json.loads(id2label.read_text("utf-8")).items()}
        except (ValueError, AttributeError) as exc:
            raise DataError(f"{id2label} is not a JSON object of id -> name ({exc})") from exc
        if sorted(mapping) != list(range(len(mapping))):
            raise DataError(f"{id2label} must number classes 0..N-1 without gaps")
        return [mapping[i] for i in range(len(mapping))]
    return load_class_names(root)


class ParquetSource(DatasetSource):
    """The Hugging Face parquet export (``image`` and ``label`` image structs per row)."""

    kind = "parquet"

    def __init__(self, root: Path, files: dict[str, list[Path]]):
        super().__init__(root, _class_names(root))
        self.files = files
        self._groups: dict[Path, list[int]] = {}
        self._handles: dict[Path, Any] = {}
        self._cache: OrderedDict[tuple[Path, int, str], Any] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        # Open files and cached row groups stay in the process that made them (DataLoader
        # workers reopen lazily).
        state = self.__dict__.copy()
        state["_handles"], state["_cache"] = {}, OrderedDict()
        return state

    def splits(self) -> list[str]:
        """Return the splits that have parquet files."""
        return list(self.files)

    def items(self, split: str, include_incomplete: bool = False) -> list[Item]:
        """Return one item per row, keyed ``<split>-<index>`` (see :class:`DatasetSource`).

        Rows without a label are returned too; reading their mask raises :class:`DataError`,
        which ``cmi data validate`` reports as a missing mask.
        """
        self._check_split(split)
        out: list[Item] = []
        for path in self.files[split]:
            for row in range(sum(self._row_groups(path))):
                out.append(Item(f"{split}-{len(out):05d}", split, path, path, row))
        return out

    def pair_names(self, split: str) -> dict[str, str]:
        """Return ``<split>/<stem of the image's stored path>`` per key (see the base class).

        Only the ``image.path`` field is read, never the image bytes. Keys number rows in file
        order, so a name taken from the export's own file names keeps the validation hash
        independent of row order, and equal to the folder layout's ``train/00017``; without a
        path for every row, or with duplicates, the keys are used.
        """
        items = self.items(split)
        stems: list[str | None] = []
        import pyarrow as pa

        for path in self.files[split]:
            for group in range(len(self._row_groups(path))):
                try:
                    table = self._file(path).read_row_group(group, columns=["image.path"])
                    values = table.column("image").to_pylist()
                except (OSError, KeyError, pa.ArrowException):
                    return super().pair_names(split)
                stems += [Path(v["path"]).stem if v and v.get("path") else None for v in values]
        if len(stems) != len(items) or None in stems or len(set(stems)) != len(stems):
            return super().pair_names(split)
        return {item.key: f"{split}/{stem}" for item, stem in zip(items, stems, strict=True)}

    def read_image_bytes(self, item: Item) -> bytes:
        """Return the encoded image of a row (see :class:`DatasetSource`)."""
        return self._cell_bytes(item, "image")

    def read_mask_bytes(self, item: Item) -> bytes:
        """Return the encoded label mask of a row (see :class:`DatasetSource`)."""
        return self._cell_bytes(item, "label")

    def _file(self, path: Path) -> Any:
        if path not in self._handles:
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                handle = pq.ParquetFile(path)
            except (OSError, pa.ArrowException) as exc:
                raise DataError(f"{path} is not a readable parquet file ({exc})") from exc
            missing = [c for c in COLUMNS if c not in handle.schema_arrow.names]
            if missing:
                raise DataError(
                    f"{path} has no column {', '.join(missing)} "
                    f"(columns: {', '.join(handle.schema_arrow.names)})",
                    hint="expected the Hugging Face FoodSeg103 export with image and label",
                )
            self._handles[path] = handle
        return self._handles[path]

    def _row_groups(self, path: Path) -> list[int]:
        if path not in self._groups:
            meta = self._file(path).metadata
            self._groups[path] = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        return self._groups[path]

    def _column(self, path: Path, group: int, column: str) -> Any:
        key = (path, group, column)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        import pyarrow as pa

        try:
            table = self._file(path).read_row_group(group, columns=[column])
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot read row group {group} of {path} ({exc})") from exc
        self._cache[key] = table.column(column)
        if len(self._cache) > _CACHED_GROUPS:
            self._cache.popitem(last=False)
        return self._cache[key]

    def _cell_bytes(self, item: Item, column: str) -> bytes:
        path = item.image if column == "image" else item.mask
        if path is None or item.row < 0:
            raise DataError(f"{item.key} is not a parquet row")
        group, row = self._locate(path, item.row, item.key)
        value = self._column(path, group, column)[row].as_py()
        if isinstance(value, dict):
            data, ref = value.get("bytes"), value.get("path")
            if data is None and ref:
                data = self._external(Path(ref))
            value = data
        if not value:
            what = "image" if column == "image" else "label mask"
            raise DataError(f"{item.key} ({path.name} row {item.row}) has no {what}")
        if not isinstance(value, bytes):
            raise DataError(f"{item.key}: column {column} holds {type(value).__name__}, not bytes")
        return value

    def _locate(self, path: Path, row: int, key: str) -> tuple[int, int]:
        """Return the row group holding a file-level row, and the row's index inside it."""
        for group, size in enumerate(self._row_groups(path)):
            if row < size:
                return group, row
            row -= size
        raise DataError(f"{key}: row is past the end of {path}")

    def _external(self, ref: Path) -> bytes | None:
        # Some exports store only a path to a file beside the parquet files.
        for candidate in (ref, self.root / ref):
            if candidate.is_file():
                return candidate.read_bytes()
        return None
