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
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from cmi_cli.predict.segment import TABLE_COLUMNS, ClassStat, Segmented, table_rows
from cmi_cli.utils.files import atomic_path, atomic_write_bytes

SAVE_KINDS = ("mask", "overlay", "table")
JOURNAL = "journal.jsonl"
TABLE_STEM = "classes"
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


def journal_record(image: str, name: str, seg: Segmented, save: Sequence[str]) -> dict[str, Any]:
    """The journal line of a finished photo (enough to rebuild its table rows)."""
    return {
        "image": image,
        "name": name,
        "width": seg.width,
        "height": seg.height,
        "saved": sorted(set(save) - {"table"}),
        "classes": [[c.id, c.name, c.pixels, c.confidence_sum] for c in seg.classes],
    }


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


def rows_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows of one journal record."""
    seg = Segmented(
        width=int(record["width"]),
        height=int(record["height"]),
        classes=[ClassStat(int(i), str(n), int(p), float(s)) for i, n, p, s in record["classes"]],
    )
    return table_rows(str(record["image"]), seg)


def write_table(out: Path, records: Iterable[dict[str, Any]]) -> list[Path]:
    """Write ``classes.csv`` and ``classes.parquet`` (one row per photo and class) atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [row for rec in records for row in rows_of(rec)]
    csv_path, parquet_path = out / f"{TABLE_STEM}.csv", out / f"{TABLE_STEM}.parquet"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TABLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    atomic_write_bytes(csv_path, buf.getvalue().encode("utf-8"))
    schema = pa.schema(
        [
            ("image", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("class_id", pa.int16()),
            ("class_name", pa.string()),
            ("pixels", pa.int64()),
            ("share_of_plate", pa.float64()),
            ("share_of_image", pa.float64()),
            ("mean_confidence", pa.float64()),
        ]
    )
    # Column by column: Table.from_pylist would import pandas.
    columns = [pa.array([row[f.name] for row in rows], f.type) for f in schema]
    table = pa.Table.from_arrays(columns, schema=schema)
    with atomic_path(parquet_path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return [csv_path, parquet_path]


def write_errors(out: Path, errors: Sequence[tuple[str, str]]) -> Path:
    """Write ``errors.csv`` (columns ``path``, ``reason``) atomically; header only if none."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(errors)
    return atomic_write_bytes(out / ERRORS, buf.getvalue().encode("utf-8"))
