"""A packed copy of a dataset, decoded and resized once, that training reads with no decoding.

``cmi data prepare`` writes, for one square size ``S``::

    CACHE_DIR/<key>/index.json              what is inside, and for which data
    CACHE_DIR/<key>/<split>.images.u8       uint8 [N, S, S, 3], RGB, resized bilinearly
    CACHE_DIR/<key>/<split>.masks.u8        uint8 [N, S, S], class ids, resized nearest

The arrays are raw C-order bytes read through ``numpy.memmap``, so a sample costs one copy out
of the page cache. ``CACHE_DIR`` is ``ROOT/.cache`` unless configured; the project templates
list ``.cache/`` in ``.dvcignore`` (the data's DVC hash ignores it) and ``.gitignore``.

The key is ``<data version>-<S>``. The data version is the DVC md5 recorded in the data's
``.dvc`` file when DVC tracks it; otherwise ``fp-`` and a hash of every file's path, size and
modification time (cheap: no file is read). The index also records a hash of paths and sizes,
checked on use, so an edit that changes a file's size is noticed even before ``dvc add``.
A new data version or size means a new key: the cache is rebuilt and stale caches of the same
size are removed. Caches are built in a temporary folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmi_cli.console import err_console, is_quiet
from cmi_cli.data.layout import DatasetSource, Item, open_dataset
from cmi_cli.data.transforms import resize_pair
from cmi_cli.errors import DataError, UsageError

FORMAT = "cmi-packed-cache/1"
CACHE_DIRNAME = ".cache"
INDEX_NAME = "index.json"


def default_cache_dir(root: Path) -> Path:
    """Return where the caches of a dataset root live by default (``ROOT/.cache``)."""
    return Path(root) / CACHE_DIRNAME


@dataclass(frozen=True)
class DataFingerprint:
    """Which data a cache was built from.

    Attributes:
        version: The DVC md5 of the data, or ``fp-`` and a hash of paths, sizes and mtimes.
        dvc_md5: The DVC md5, or ``None`` when no ``.dvc`` file tracks the data.
        content: A hash of every file's path and size (mtimes left out: a checkout changes them).
        files: Number of files under the root, caches excluded.
    """

    version: str
    dvc_md5: str | None
    content: str
    files: int


def fingerprint_data(root: Path, cache_dir: Path | None = None) -> DataFingerprint:
    """Fingerprint a dataset root from its ``.dvc`` file and the files' metadata.

    Args:
        root: The dataset folder.
        cache_dir: A cache folder inside ``root`` to leave out (default: ``ROOT/.cache``).
    """
    from cmi_cli.data.versioning import data_version

    root = Path(root)
    skip = {default_cache_dir(root).resolve()}
    if cache_dir is not None:
        skip.add(Path(cache_dir).resolve())
    content, stamped = hashlib.sha1(), hashlib.sha1()
    count = 0
    for rel, stat in _walk(root, skip):
        content.update(f"{rel}\0{stat.st_size}\n".encode())
        stamped.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        count += 1
    md5 = data_version(root)
    version = md5.removesuffix(".dir") if md5 else f"fp-{stamped.hexdigest()[:20]}"
    return DataFingerprint(version, md5, content.hexdigest()[:20], count)


def _walk(root: Path, skip: set[Path]) -> Iterator[tuple[str, os.stat_result]]:
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if (here / d).resolve() not in skip)
        for name in sorted(files):
            path = here / name
            yield path.relative_to(root).as_posix(), path.stat()


def cache_key(fingerprint: DataFingerprint, size: int) -> str:
    """Return the folder name of the cache of this data at ``size``."""
    return f"{fingerprint.version}-{size}"


class PackedSplit:
    """One split of a packed cache: ``read(i)`` returns the i-th pair as arrays.

    The memory maps open on first use in each process, so the object pickles as a few paths
    and DataLoader workers each map the files themselves.
    """

    def __init__(self, folder: Path, name: str, keys: list[str], size: int):
        self.folder = folder
        self.name = name
        self.keys = keys
        self.size = size
        self._maps: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def image_path(self) -> Path:
        """The images file."""
        return self.folder / f"{self.name}.images.u8"

    @property
    def mask_path(self) -> Path:
        """The masks file."""
        return self.folder / f"{self.name}.masks.u8"

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        if self._maps is None:
            n, s = len(self.keys), self.size
            images = np.memmap(self.image_path, dtype=np.uint8, mode="r", shape=(n, s, s, 3))
            masks = np.memmap(self.mask_path, dtype=np.uint8, mode="r", shape=(n, s, s))
            self._maps = (images, masks)
        return self._maps

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return pair ``index`` as ``(image SxSx3 uint8, mask SxS uint8)``, copied out."""
        images, masks = self._open()
        return np.array(images[index]), np.array(masks[index])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = None
        return state

    def __repr__(self) -> str:
        return f"PackedSplit({self.name!r}, n={len(self)}, size={self.size})"


@dataclass(frozen=True)
class PackedCache:
    """A complete cache folder and its index.

    Attributes:
        path: The cache folder (``CACHE_DIR/<key>``).
        index: The parsed ``index.json``.
    """

    path: Path
    index: dict[str, Any]

    @property
    def key(self) -> str:
        """The cache key (data version and size)."""
        return str(self.index["key"])

    @property
    def size(self) -> int:
        """The side of every cached image."""
        return int(self.index["size"])

    @property
    def splits(self) -> dict[str, int]:
        """Pairs per cached split."""
        return {name: int(s["count"]) for name, s in self.index["splits"].items()}

    @property
    def nbytes(self) -> int:
        """Bytes of the cached arrays."""
        return sum(n * self.size * self.size * 4 for n in self.splits.values())

    def split(self, name: str) -> PackedSplit:
        """Return a cached split.

        Raises:
            DataError: If the split is not in the cache.
        """
        if name not in self.index["splits"]:
            raise DataError(
                f"the cache {self.path} has no split {name!r}",
                hint="run `cmi data prepare` again",
            )
        return PackedSplit(self.path, name, list(self.index["splits"][name]["keys"]), self.size)


def read_cache(path: Path) -> PackedCache | None:
    """Open a cache folder, or return ``None`` when it is incomplete or of another format."""
    index = _read_index(Path(path))
    if index is None or index.get("format") != FORMAT:
        return None
    try:
        cache = PackedCache(Path(path), index)
        for name, n in cache.splits.items():
            part = cache.split(name)
            s = cache.size
            if (
                part.image_path.stat().st_size != n * s * s * 3
                or part.mask_path.stat().st_size != n * s * s
            ):
                return None
    except (OSError, KeyError, TypeError, AttributeError):
        return None
    return cache


def find_cache(root: Path, size: int, cache_dir: Path | None = None) -> PackedCache | None:
    """Return the cache of ``root`` at ``size`` if it matches the data as it is now.

    Args:
        root: The dataset folder.
        size: The square side wanted.
        cache_dir: Where caches live (default: ``ROOT/.cache``).
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
    if not folder.is_dir():
        return None
    fingerprint = fingerprint_data(root, folder)
    cache = read_cache(folder / cache_key(fingerprint, size))
    if cache is None or cache.index.get("content") != fingerprint.content:
        return None
    return cache


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare_cache` did.

    Attributes:
        cache: The cache, built or found.
        built: False when an up-to-date cache was already there.
        seconds: Time spent.
        removed: Stale caches of the same size that were deleted.
    """

    cache: PackedCache
    built: bool
    seconds: float
    removed: list[Path]


def prepare_cache(
    root: Path,
    size: int,
    cache_dir: Path | None = None,
    force: bool = False,
    threads: int | None = None,
    show_progress: bool = True,
) -> PrepareResult:
    """Decode and resize every pair of every split of ``root`` once into a packed cache.

    Images are resized bilinearly and masks with nearest neighbour, exactly as the validation
    transform does, so a validation sample read from the cache equals one decoded directly.

    Args:
        root: The dataset folder.
        size: Side of the square arrays (use the training ``data.image_size``).
        cache_dir: Where caches live (default: ``ROOT/.cache``).
        force: Rebuild even when an up-to-date cache exists.
        threads: Decoding threads (Pillow releases the GIL); default: the core count, at most 8.
        show_progress: Show a progress bar on stderr (never under ``--quiet``).

    Returns:
        The cache and whether it was built.

    Raises:
        UsageError: If ``size`` is below 16.
        DataError: If the dataset is missing, empty, or has an unreadable pair.
    """
    if size < 16:
        raise UsageError(f"cache size must be at least 16 pixels, got {size}")
    start = time.perf_counter()
    root = Path(root)
    source = open_dataset(root)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
    fingerprint = fingerprint_data(root, folder)
    key = cache_key(fingerprint, size)
    if not force:
        found = read_cache(folder / key)
        if found is not None and found.index.get("content") == fingerprint.content:
            return PrepareResult(found, False, time.perf_counter() - start, [])
    work = {split: source.items(split) for split in source.splits()}
    work = {split: items for split, items in work.items() if items}
    if not work:
        raise DataError(f"{root} has no image/mask pairs to cache", hint="run `cmi data validate`")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=folder))
    try:
        _write_arrays(
            source, work, tmp, size, threads or min(8, os.cpu_count() or 1), show_progress
        )
        index = {
            "format": FORMAT,
            "key": key,
            "size": size,
            "dtype": "uint8",
            "data_version": fingerprint.version,
            "dvc_md5": fingerprint.dvc_md5,
            "content": fingerprint.content,
            "files": fingerprint.files,
            "source_kind": source.kind,
            "root": str(root.resolve()),
            "resize": {"image": "bilinear", "mask": "nearest"},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "splits": {
                split: {
                    "count": len(items),
                    "image_shape": [len(items), size, size, 3],
                    "mask_shape": [len(items), size, size],
                    "keys": [item.key for item in items],
                }
                for split, items in work.items()
            },
        }
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=1), "utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is as readable as the data
        final = folder / key
        _replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    removed = _remove_stale(folder, root, key, size)
    cache = read_cache(final)
    if cache is None:  # pragma: no cover - only if another process removed it meanwhile
        raise DataError(f"the cache {final} vanished while it was written", hint="run it again")
    return PrepareResult(cache, True, time.perf_counter() - start, removed)


def _write_arrays(
    source: DatasetSource,
    work: dict[str, list[Item]],
    out: Path,
    size: int,
    threads: int,
    show_progress: bool,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    def load(item: Item) -> tuple[np.ndarray, np.ndarray]:
        return resize_pair(*source.read(item), size)

    with (
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console(),
            disable=not show_progress or is_quiet(),
            transient=True,
        ) as progress,
        ThreadPoolExecutor(max_workers=max(1, threads)) as pool,
    ):
        for split, items in work.items():
            n = len(items)
            images = np.memmap(
                out / f"{split}.images.u8", dtype=np.uint8, mode="w+", shape=(n, size, size, 3)
            )
            masks = np.memmap(
                out / f"{split}.masks.u8", dtype=np.uint8, mode="w+", shape=(n, size, size)
            )
            task = progress.add_task(f"packing {split}", total=n)
            for i, (image, mask) in enumerate(pool.map(load, items)):
                images[i], masks[i] = image, mask
                progress.advance(task)
            images.flush()
            masks.flush()
            del images, masks


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        # A stale or forced rebuild: move the old folder aside first, as directories cannot
        # be replaced atomically when the target is not empty.
        trash = Path(tempfile.mkdtemp(prefix=".old-", dir=final.parent))
        os.replace(final, trash / final.name)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(tmp, final)
    except OSError:
        # Another process finished the same cache first; keep theirs if it is whole.
        if read_cache(final) is None:
            raise


def _remove_stale(folder: Path, root: Path, key: str, size: int) -> list[Path]:
    """Delete leftover builds, and caches of the same root and size for other data versions.

    Only folders this module wrote are touched, so a shared ``cache_dir`` is safe.
    """
    removed = []
    for path in sorted(folder.iterdir()):
        if path.name == key or not path.is_dir():
            continue
        if path.name.startswith(".build-"):
            stale = _older_than(path, 24 * 3600)
        else:
            index = _read_index(path)
            stale = (
                index is not None
                and index.get("format") == FORMAT
                and index.get("size") == size
                and index.get("root") == str(root.resolve())
            )
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _read_index(path: Path) -> dict[str, Any] | None:
    try:
        index = json.loads((path / INDEX_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) else None


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except OSError:
        return False


def iter_caches(root: Path, cache_dir: Path | None = None) -> list[PackedCache]:
    """Return every complete cache of a dataset root, current or not (for reports)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
    if not folder.is_dir():
        return []
    found = (read_cache(p) for p in sorted(folder.iterdir()) if not p.name.startswith("."))
    return [c for c in found if c is not None]
