"""Tiny FoodSeg103-shaped datasets for the data tests, in both layouts, made with Pillow.

The same encoded bytes go into the folder layout and the parquet export, so both layouts must
decode to identical arrays.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

Pair = tuple[str, bytes, bytes]  # stem, encoded image, encoded mask
# Rows of a parquet export may lack an image or a label.
Row = tuple[str, bytes | None, bytes | None]


def encode(arr: np.ndarray, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def make_mask(h: int, w: int, ids: list[int], rng: np.random.Generator) -> np.ndarray:
    """Vertical bands of class ids, so nearest resizing keeps every id visible."""
    mask = np.zeros((h, w), dtype=np.uint8)
    bands = np.array_split(np.arange(w), len(ids))
    for band, cid in zip(bands, ids, strict=True):
        mask[:, band] = cid
    mask[: h // 4, : w // 4] = rng.choice(ids)
    return mask


def make_image(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def make_pairs(
    n: int, size: tuple[int, int] = (24, 32), seed: int = 0, prefix: str = ""
) -> list[Pair]:
    """``n`` pairs of a JPEG photo and a PNG mask holding ids 0..5 (and sometimes 255)."""
    rng = np.random.default_rng(seed)
    h, w = size
    pairs = []
    for i in range(n):
        ids = sorted({0, *rng.choice(np.arange(1, 6), size=2, replace=False).tolist()})
        mask = make_mask(h, w, ids, rng)
        pairs.append(
            (f"{prefix}{i:05d}", encode(make_image(h, w, rng), "JPEG", quality=90), encode(mask))
        )
    return pairs


def write_folder(root: Path, splits: dict[str, list[Pair]], names: list[str] | None = None) -> Path:
    """Write the official layout: Images/img_dir/<split>/*.jpg and Images/ann_dir/<split>/*.png."""
    for split, pairs in splits.items():
        img_dir = root / "Images" / "img_dir" / split
        ann_dir = root / "Images" / "ann_dir" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for stem, image, mask in pairs:
            (img_dir / f"{stem}.jpg").write_bytes(image)
            (ann_dir / f"{stem}.png").write_bytes(mask)
    if names is not None:
        text = "".join(f"{i}\t{name}\n" for i, name in enumerate(names))
        (root / "category_id.txt").write_text(text, "utf-8")
    return root


def write_parquet_file(
    path: Path,
    pairs: Sequence[Row],
    row_group_size: int | None = None,
) -> Path:
    """One parquet file with image/label structs {bytes, path}, as the Hugging Face export."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

    def cells(kind: int, suffix: str) -> pa.Array:
        return pa.array(
            [
                None if p[kind] is None else {"bytes": p[kind], "path": f"{p[0]}{suffix}"}
                for p in pairs
            ],
            type=struct,
        )

    table = pa.table(
        {
            "image": cells(1, ".jpg"),
            "label": cells(2, ".png"),
            "id": pa.array(range(len(pairs)), type=pa.int64()),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def write_parquet(
    root: Path,
    splits: Mapping[str, Sequence[Row]],
    where: str = "data",
    row_group_size: int | None = None,
) -> Path:
    """Write the export; ``where`` is ``data`` (data/train-00000-of-00001.parquet), ``flat``
    (train-00000-of-00001.parquet) or ``folders`` (train/0000.parquet)."""
    for split, pairs in splits.items():
        if where == "data":
            path = root / "data" / f"{split}-00000-of-00001.parquet"
        elif where == "flat":
            path = root / f"{split}-00000-of-00001.parquet"
        else:
            path = root / split / "0000.parquet"
        write_parquet_file(path, pairs, row_group_size)
    return root
