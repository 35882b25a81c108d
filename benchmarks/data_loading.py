"""Images per second from decoding photos against reading the packed cache, per worker count.

A synthetic sample (default 96 photos of 512 px, so decoding includes a real resize) is
generated in a temporary folder and packed at 256 px with `cmi data prepare`'s code. For
0, 1 and 2 DataLoader workers, each pipeline is timed from the photos and from the cache, in
turns (decode, cache, decode, cache, ...) so machine noise hits both alike; each timing starts
fresh workers and stops them afterwards, so no loader's prefetching steals another's cores.
Medians are printed with the ratio. Pipelines:

* load:    what the training DataLoader yields: uint8 pairs squashed to 256 px (JPEG + PNG
           decode + resize, against a copy out of the memory-mapped cache), per batch size:
           with workers, handing each batch between processes costs both columns about the
           same fixed time, which bounds the cache's rate more as batches get smaller;
* augment: the same loader, plus the per-batch augmentation and normalisation training
           applies after loading, run here on the CPU in the main process (on a GPU it runs
           on the device, after the uint8 batch is copied there).

The augmentation alone is timed too, on the CPU with all torch threads (as CPU training runs
it) and on CUDA when there is one. The loaders run with one torch thread in the main
process, as DataLoader workers do (see ``cmi_cli.profiling.data_profile``).

    python benchmarks/data_loading.py [--images 96] [--source-size 512] [--size 256]
                                      [--batch-sizes 8,16] [--workers 0,1,2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cmi_cli.data.batch_transforms import BatchAugment, BatchPreprocess
from cmi_cli.data.cache import prepare_cache
from cmi_cli.data.dataset import SegmentationDataset
from cmi_cli.data.layout import open_dataset
from cmi_cli.data.sample import generate_sample
from cmi_cli.profiling.data_profile import measure_batch_preprocess, measure_loaders

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--source-size", type=int, default=512, help="Side of the photos.")
    parser.add_argument("--size", type=int, default=256, help="Side of the cached pairs.")
    parser.add_argument(
        "--batch-sizes",
        default="8,16",
        help="Batch sizes of the load rows (the sample's config trains with 4, the full "
        "dataset's with 16); the augment rows use the first.",
    )
    parser.add_argument("--batches", type=int, default=20, help="Batches per timed repeat.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", default="0,1,2")
    args = parser.parse_args()
    torch.manual_seed(0)
    workers = [int(w) for w in args.workers.split(",")]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

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
        source = open_dataset(root)
        datasets = {
            "decode": SegmentationDataset(source, "train", args.size),
            "cache": SegmentationDataset(source, "train", args.size, cache=packed),
        }
        preprocess = BatchPreprocess(MEAN, STD, BatchAugment())
        threads = torch.get_num_threads()
        batch = next(iter(DataLoader(datasets["cache"], batch_size=batch_sizes[0])))
        for device in ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]:
            rate = measure_batch_preprocess(preprocess, batch, device, args.repeats)
            print(f"augment + normalise alone on {device} ({threads} threads): {rate:.0f} img/s")
        torch.set_num_threads(1)
        print(
            f"train split: {len(packed)} pairs, median of {args.repeats} x {args.batches} "
            f"batches, torch threads {torch.get_num_threads()}"
        )
        print(
            f"{'pipeline':<8} {'batch':>5} {'workers':>7} {'decode img/s':>13} "
            f"{'cache img/s':>12} {'ratio':>7}"
        )

        def augment(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
            preprocess(batch, train=True)

        rows = [("load", b, None) for b in batch_sizes] + [("augment", batch_sizes[0], augment)]
        for name, size, per_batch in rows:
            for w in workers:
                rates = measure_loaders(datasets, size, w, args.batches, args.repeats, per_batch)
                slow, fast = (statistics.median(rates[k]) for k in ("decode", "cache"))
                print(
                    f"{name:<8} {size:>5} {w:>7} {slow:>13.0f} {fast:>12.0f} {fast / slow:>6.1f}x"
                )
                sys.stdout.flush()


if __name__ == "__main__":
    main()
