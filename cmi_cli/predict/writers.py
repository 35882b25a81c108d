"""What ``cmi predict`` writes: palette masks, overlays, the journal, the table, the errors file.

Every file appears whole or not at all (written beside its destination, then renamed). The
journal is the one exception by nature: an append-only JSON-lines log of finished photos,
flushed per batch, whose torn last line (a crash mid-write) is ignored when read back. The
table is rebuilt from it, so ``--resume`` never duplicates a row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, PngImagePlugin

from cmi_cli.predict.nutrition import (
    NUTRITION_COLUMNS,
    TOTALS_COLUMNS,
    nutrition_columns,
    totals_row,
)
from cmi_cli.predict.segment import TABLE_COLUMNS, ClassStat, Segmented, table_rows
from cmi_cli.utils.files import atomic_path, atomic_write_bytes

if TYPE_CHECKING:
    import pyarrow as pa

SAVE_KINDS = ("mask", "overlay", "table")
JOURNAL = "journal.jsonl"
TABLE_STEM = "classes"
TOTALS_STEM = "totals"
ERRORS = "errors.csv"


def mask_path(out: Path, name: str) -> Path:
    """Where a photo's palette mask goes."""
    return out / "masks" / f"{name}.png"


def overlay_path(out: Path, name: str) -> Path:
    """Where a photo's overlay goes."""
    return out / "overlays" / f"{name}.jpg"


def output_paths(out: Path, name: str, save: Iterable[str]) -> list[Path]:
    """The image files a photo gets for the requested kinds (the table is shared)."""
    paths = []
    if "mask" in save:
        paths.append(mask_path(out, name))
    if "overlay" in save:
        paths.append(overlay_path(out, name))
    return paths


def palette_png(mask: np.ndarray, colors: Sequence[tuple[int, int, int]], source: str) -> bytes:
    """Encode a class-id mask as a palette PNG: pixel values are class ids, shown in colour.

    The PNG's text chunk names the photo and the model it came from.
    """
    img = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
    flat = [v for rgb in colors for v in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))
    info = PngImagePlugin.PngInfo()
    info.add_text("cmi:source", source)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, compress_level=1)
    return buf.getvalue()


def write_photo_outputs(
    out: Path,
    name: str,
    seg: Segmented,
    save: Iterable[str],
    colors: Sequence[tuple[int, int, int]],
    overlay: Any = None,
    source: str = "",
) -> None:
    """Write a photo's mask and/or overlay atomically.

    Args:
        out: The output folder.
        name: The photo's output stem (:attr:`PhotoRef.out_name`).
        seg: The photo's full-size prediction.
        save: Requested kinds.
        colors: Class colours by id.
        overlay: A callable ``(rgb, mask) -> rgb`` (the served model's ``overlay``).
        source: The model id recorded in the mask's text chunk.
    """
    assert seg.mask is not None
    if "mask" in save:
        atomic_write_bytes(mask_path(out, name), palette_png(seg.mask, colors, source))
    if "overlay" in save and seg.rgb is not None and overlay is not None:
        path = overlay_path(out, name)
        with atomic_path(path, suffix=".jpg") as tmp:
            Image.fromarray(overlay(seg.rgb, seg.mask)).save(tmp, format="JPEG", quality=90)


def journal_record(
    image: str,
    name: str,
    seg: Segmented,
    save: Sequence[str],
    nutrition: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The journal line of a finished photo (enough to rebuild its table rows).

    ``nutrition`` is the photo's estimate as :func:`cmi_cli.predict.nutrition.journal_nutrition`
    gives it (with ``--nutrition``).
    """
    record: dict[str, Any] = {
        "image": image,
        "name": name,
        "width": seg.width,
        "height": seg.height,
        "saved": sorted(set(save) - {"table"}),
        "classes": [[c.id, c.name, c.pixels, c.confidence_sum] for c in seg.classes],
    }
    if nutrition is not None:
        record["nutrition"] = nutrition
    return record


def read_journal(out: Path) -> dict[str, dict[str, Any]]:
    """Finished photos by image key, in first-seen order, the last record of each winning.

    A line that does not parse (the torn end of an interrupted run) is skipped.
    """
    records: dict[str, dict[str, Any]] = {}
    path = out / JOURNAL
    if not path.is_file():
        return records
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                records[str(rec["image"])] = rec
            except (ValueError, KeyError, TypeError):
                continue
    return records


def rows_of(record: dict[str, Any], nutrition: bool = False) -> list[dict[str, Any]]:
    """Table rows of one journal record; with ``nutrition``, the nutrition columns too."""
    seg = Segmented(
        width=int(record["width"]),
        height=int(record["height"]),
        classes=[ClassStat(int(i), str(n), int(p), float(s)) for i, n, p, s in record["classes"]],
    )
    rows = table_rows(str(record["image"]), seg)
    if nutrition:
        for row in rows:
            row.update(nutrition_columns(record.get("nutrition"), row["class_id"]))
    return rows


TABLE_TYPES = {
    "image": "string",
    "width": "int32",
    "height": "int32",
    "class_id": "int16",
    "class_name": "string",
    "pixels": "int64",
    "share_of_plate": "float64",
    "share_of_image": "float64",
    "mean_confidence": "float64",
    "plate_diameter_cm": "float64",
    "plate_diameter_source": "string",
    "nutrition_method": "string",
    "nutrition_table_sha256": "string",
    "broad": "bool",
}
"""Arrow types of the table columns; every other (nutrition) column is float64."""


def _arrow_column(values: Sequence[Any], kind: str) -> pa.Array:
    """One typed Arrow column from Python values (``None`` is null), without pandas.

    ``pa.array`` on Python objects or numpy arrays imports pandas (pyarrow probes for pandas
    types), which ``cmi predict`` on ONNX must not pay for; the column is built from numpy
    buffers instead.
    """
    import pyarrow as pa

    n = len(values)
    valid = np.array([v is not None for v in values], dtype=bool)
    nulls = int(n - valid.sum())
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    if kind == "string":
        data = [b"" if v is None else str(v).encode("utf-8") for v in values]
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum([len(b) for b in data], out=offsets[1:])
        buffers = [bitmap, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))]
        return pa.Array.from_buffers(pa.string(), n, buffers, nulls)
    if kind == "bool":
        bits = np.packbits(np.array([bool(v) for v in values], dtype=bool), bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), n, [bitmap, pa.py_buffer(bits)], nulls)
    dtype = np.dtype(kind)
    data_array = np.array([0 if v is None else v for v in values], dtype=dtype)
    arrow_type = pa.from_numpy_dtype(dtype)
    return pa.Array.from_buffers(arrow_type, n, [bitmap, pa.py_buffer(data_array)], nulls)


def _write_csv_and_parquet(
    out: Path, stem: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]
) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path, parquet_path = out / f"{stem}.csv", out / f"{stem}.parquet"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    atomic_write_bytes(csv_path, buf.getvalue().encode("utf-8"))
    arrays = [
        _arrow_column([r.get(c) for r in rows], TABLE_TYPES.get(c, "float64")) for c in columns
    ]
    table = pa.Table.from_arrays(arrays, names=list(columns))
    with atomic_path(parquet_path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return [csv_path, parquet_path]


def write_table(
    out: Path, records: Iterable[dict[str, Any]], nutrition: bool = False
) -> list[Path]:
    """Write ``classes.csv`` and ``classes.parquet`` (one row per photo and class) atomically.

    With ``nutrition``, the class table gains the nutrition columns and ``totals.csv`` and
    ``totals.parquet`` (one row per photo: the plate's estimated grams and nutrients) are
    written too.
    """
    records = list(records)
    rows = [row for rec in records for row in rows_of(rec, nutrition)]
    columns = [*TABLE_COLUMNS, *NUTRITION_COLUMNS] if nutrition else list(TABLE_COLUMNS)
    paths = _write_csv_and_parquet(out, TABLE_STEM, columns, rows)
    if nutrition:
        totals = [totals_row(rec) for rec in records]
        paths += _write_csv_and_parquet(out, TOTALS_STEM, TOTALS_COLUMNS, totals)
    return paths


def write_errors(out: Path, errors: Sequence[tuple[str, str]]) -> Path:
    """Write ``errors.csv`` (columns ``path``, ``reason``) atomically; header only if none."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(errors)
    return atomic_write_bytes(out / ERRORS, buf.getvalue().encode("utf-8"))
