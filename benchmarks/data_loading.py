"""Images per second from decoding photos against reading the packed cache, per worker count.

A synthetic sample (default 96 photos of 512 px, so decoding includes a real resize) is
generated in a temporary folder and packed at 256 px with `cmi data prepare`'s code. For
0, 1 and 2 DataLoader workers, each pipeline is timed from the photos and from the cache, in
turns (decode, cache, decode, cache, ...) so machine noise hits both alike; medians are
printed with the ratio. Pipelines:

* read:  the 256 px uint8 pair only (JPEG + PNG decode + resize against a memory-map copy);
* eval:  the validation transform (resize, normalise);
* train: the training transform (random zoom, crop, flip, colour jitter, normalise), the same
  in both columns.

The read row isolates what the cache replaces. In the train row the augmentation (a resize at
a random zoom, colour jitter and normalisation in float32) costs about as much as decoding a
512 px photo, so the end-to-end gain is smaller; with workers, moving batches between
processes adds a cost both columns pay.

The main process uses one torch thread, as DataLoader workers do (see
``cmi_cli.profiling.data_profile``).

    python benchmarks/data_loading.py [--images 96] [--source-size 512] [--size 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cmi_cli.data.cache import PackedSplit, prepare_cache
from cmi_cli.data.dataset import SegmentationDataset
from cmi_cli.data.layout import DatasetSource, open_dataset
from cmi_cli.data.sample import generate_sample
from cmi_cli.data.transforms import EvalTransform, TrainTransform, resize_image, resize_mask
from cmi_cli.profiling.data_profile import measure_loaders

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ReadOnly(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The uint8 pair at the cache's size: decoded and resized, or copied from the cache."""

    def __init__(self, source: DatasetSource, split: str, size: int, packed: PackedSplit | None):
        self.source, self.items, self.size, self.packed = source, source.items(split), size, packed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.packed is not None:
            image, mask = self.packed.read(i)
        else:
            image, mask = self.source.read(self.items[i])
            s = self.size
            image, mask = resize_image(image, s, s), resize_mask(mask, s, s)
        # Decoded arrays are read-only views of Pillow's buffer; copy as the transforms would.
        return torch.from_numpy(np.array(image)), torch.from_numpy(np.array(mask))


def pipelines(root: Path, size: int, packed: PackedSplit) -> dict[str, dict[str, Any]]:
    source = open_dataset(root)
    train_tf = TrainTransform(size, MEAN, STD)
    eval_tf = EvalTransform(size, MEAN, STD)
    return {
        "read": {
            "decode": ReadOnly(source, "train", size, None),
            "cache": ReadOnly(source, "train", size, packed),
        },
        "eval": {
            "decode": SegmentationDataset(source, "train", eval_tf),
            "cache": SegmentationDataset(source, "train", eval_tf, cache=packed),
        },
        "train": {
            "decode": SegmentationDataset(source, "train", train_tf),
            "cache": SegmentationDataset(source, "train", train_tf, cache=packed),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--source-size", type=int, default=512, help="Side of the photos.")
    parser.add_argument("--size", type=int, default=256, help="Side of the cached pairs.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=6, help="Batches per timed repeat.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", default="0,1,2")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    workers = [int(w) for w in args.workers.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "foodseg103"
        start = time.perf_counter()
        generate_sample(root, images=args.images, size=args.source_size, show_progress=False)
        made = time.perf_counter() - start
        result = prepare_cache(root, args.size, show_progress=False)
        print(
            f"sample: {args.images} photos of {args.source_size} px in {made:.1f} s; cache at "
            f"{args.size} px: {result.cache.nbytes / 1e6:.1f} MB in {result.seconds:.1f} s"
        )
        packed = result.cache.split("train")
        print(
            f"train split: {len(packed)} pairs, batch {args.batch_size}, median of "
            f"{args.repeats} x {args.batches} batches, torch threads {torch.get_num_threads()}"
        )
        print(
            f"{'pipeline':<8} {'workers':>7} {'decode img/s':>13} {'cache img/s':>12} {'ratio':>7}"
        )
        for name, datasets in pipelines(root, args.size, packed).items():
            for w in workers:
                rates = measure_loaders(datasets, args.batch_size, w, args.batches, args.repeats)
                slow, fast = (statistics.median(rates[k]) for k in ("decode", "cache"))
                print(f"{name:<8} {w:>7} {slow:>13.0f} {fast:>12.0f} {fast / slow:>6.1f}x")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
