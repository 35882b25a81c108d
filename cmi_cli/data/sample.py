"""Generate the embedded synthetic sample: FoodSeg103's folder layout and class ids, made up.

The sample is for demos and tests: plates of 1 to 5 food items on a table, each class with its own
colour, texture and shape model, lighting, blur and noise varying per photo. Image ``i`` is drawn
from ``SeedSequence([seed, i])`` alone, and files are written with fixed encoder settings, so the
same arguments give byte-identical files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from cmi_cli.console import err_console, is_quiet
from cmi_cli.data.sample_render import SAMPLE_CLASS_IDS, class_models, class_order, render_image
from cmi_cli.errors import DataError, UsageError
from cmi_cli.paths import SAMPLE_IMAGES

__all__ = [
    "SAMPLE_CLASS_IDS",
    "SampleSummary",
    "class_models",
    "generate_sample",
    "sample_class_ids",
]

JPEG_QUALITY = 90
MAX_IMAGES = 99_999


@dataclass(frozen=True)
class SampleSummary:
    """What :func:`generate_sample` wrote.

    Attributes:
        root: The dataset folder (``Images/img_dir``, ``Images/ann_dir``, ``category_id.txt``).
        counts: Images per split, ``{"train": n, "test": m}``.
        size: Width and height of every image in pixels.
        seed: The seed the sample was drawn from.
        class_ids: The food class ids the sample draws from.
    """

    root: Path
    counts: dict[str, int]
    size: int
    seed: int
    class_ids: tuple[int, ...]


def sample_class_ids(num_food_classes: int = len(SAMPLE_CLASS_IDS)) -> tuple[int, ...]:
    """Return the sorted food class ids a sample with ``num_food_classes`` classes uses.

    Args:
        num_food_classes: How many of FoodSeg103's 103 food classes to use.
    """
    return tuple(sorted(class_order()[:num_food_classes]))


def _validate(images: int, size: int, seed: int, test_fraction: float, classes: int) -> None:
    if not 2 <= images <= MAX_IMAGES:
        raise UsageError(
            f"--images must be between 2 and {MAX_IMAGES} (got {images})",
            "Both splits need at least one image.",
        )
    if size < 32:
        raise UsageError(f"--size must be at least 32 pixels (got {size})")
    if not 0 < test_fraction < 1:
        raise UsageError(
            f"--test-fraction must be between 0 and 1, exclusive (got {test_fraction})"
        )
    if seed < 0:
        raise UsageError(f"--seed must be a non-negative integer (got {seed})")
    if not 1 <= classes <= 103:
        raise UsageError(f"--num-classes must be between 1 and 103 (got {classes})")


def _split_counts(images: int, test_fraction: float) -> dict[str, int]:
    test = min(images - 1, max(1, round(images * test_fraction)))
    return {"train": images - test, "test": test}


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder", "Choose another --out.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(
            f"{out} already exists and is not empty",
            "Pass --overwrite to replace it, or choose another --out.",
        )


def _write_pair(image: np.ndarray, mask: np.ndarray, img_path: Path, ann_path: Path) -> None:
    # Fixed encoder settings and no metadata keep the bytes identical between runs.
    Image.fromarray(image, "RGB").save(
        img_path, "JPEG", quality=JPEG_QUALITY, subsampling=2, optimize=False, progressive=False
    )
    Image.fromarray(mask, "L").save(ann_path, "PNG", compress_level=6, optimize=False)


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``, keeping the old ``out`` until the new one is in place."""
    if not out.exists():
        os.replace(tmp, out)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old = trash / "old"
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def generate_sample(
    out: Path,
    images: int = SAMPLE_IMAGES,
    size: int = 256,
    seed: int = 0,
    test_fraction: float = 0.25,
    num_food_classes: int = 12,
    overwrite: bool = False,
    show_progress: bool = True,
) -> SampleSummary:
    """Write a deterministic synthetic dataset in the FoodSeg103 folder layout.

    The result holds ``Images/img_dir/{train,test}/NNNNN.jpg`` (RGB JPEG),
    ``Images/ann_dir/{train,test}/NNNNN.png`` (one class id per pixel, mode ``L``) and
    ``category_id.txt`` listing all 104 FoodSeg103 classes. The folder appears only when complete.

    Args:
        out: The dataset folder to create.
        images: Number of images in total (at least 2).
        size: Width and height of every image in pixels (at least 32).
        seed: Seed; the same arguments give byte-identical files.
        test_fraction: Share of images in the test split, strictly between 0 and 1.
        num_food_classes: How many food classes to draw from (1..103); 12 by default.
        overwrite: Replace ``out`` if it exists and is not empty.
        show_progress: Show a progress bar on stderr (never under ``--quiet``).

    Returns:
        A summary of what was written.

    Raises:
        UsageError: If an argument is out of range.
        DataError: If ``out`` exists, is not empty, and ``overwrite`` is false.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    _validate(images, size, seed, test_fraction, num_food_classes)
    out = Path(out)
    _check_out(out, overwrite)
    class_ids = sample_class_ids(num_food_classes)
    counts = _split_counts(images, test_fraction)
    width = max(5, len(str(images - 1)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for split in counts:
            (tmp / "Images" / "img_dir" / split).mkdir(parents=True)
            (tmp / "Images" / "ann_dir" / split).mkdir(parents=True)
        category = resources.files("cmi_cli").joinpath("resources/category_id.txt").read_bytes()
        (tmp / "category_id.txt").write_bytes(category)
        progress = Progress(
            TextColumn("sample"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err_console(),
            disable=is_quiet() or not show_progress,
            transient=True,
        )
        with progress:
            task = progress.add_task("sample", total=images)
            for index in range(images):
                split = "train" if index < counts["train"] else "test"
                rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
                image, mask = render_image(rng, size, class_ids)
                stem = f"{index:0{width}d}"
                _write_pair(
                    image,
                    mask,
                    tmp / "Images" / "img_dir" / split / f"{stem}.jpg",
                    tmp / "Images" / "ann_dir" / split / f"{stem}.png",
                )
                progress.advance(task)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SampleSummary(root=out, counts=counts, size=size, seed=seed, class_ids=class_ids)
