"""A torch ``Dataset`` over one split of a :class:`~cmi_cli.data.layout.DatasetSource`.

Imports torch at module level: only training code imports this module.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from cmi_cli.data.cache import PackedSplit
from cmi_cli.data.layout import DatasetSource, Item

Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


class SegmentationDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Pairs of one split as ``(image float32 [3, H, W], mask int64 [H, W])`` tensors.

    Each sample's random augmentation draws its seed from torch's global generator. Torch seeds
    that generator differently in every DataLoader worker and every epoch (from the main
    process's generator), so augmentations differ across workers and epochs, yet a run repeats
    exactly after ``lightning.seed_everything(seed, workers=True)``.

    Args:
        source: The opened dataset.
        split: Which split to serve.
        transform: Maps ``(image, mask, rng)`` to normalised arrays (see ``transforms.py``).
        limit: Serve only the first ``limit`` pairs.
        cache: The split packed by ``cmi data prepare``: pairs are read from it, already
            resized, instead of being decoded. Its keys must be the split's, in order.

    Raises:
        ValueError: If the cache holds other pairs than the split.
    """

    def __init__(
        self,
        source: DatasetSource,
        split: str,
        transform: Transform,
        limit: int | None = None,
        cache: PackedSplit | None = None,
    ):
        self.source = source
        self.split = split
        self.transform = transform
        self.items: list[Item] = source.items(split)[:limit]
        if cache is not None and cache.keys[: len(self.items)] != [i.key for i in self.items]:
            raise ValueError(f"the cache of split {split!r} holds other pairs than the dataset")
        self.cache = cache
        self._random = bool(getattr(transform, "random", True))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is not None:
            image, mask = self.cache.read(index)
        else:
            image, mask = self.source.read(self.items[index])
        # Deterministic transforms leave torch's generator alone, so validating between
        # epochs does not shift the training augmentations.
        seed = int(torch.randint(0, 2**62, (1,)).item()) if self._random else 0
        img, m = self.transform(image, mask, np.random.default_rng(seed))
        return torch.from_numpy(img), torch.from_numpy(m)

    def __repr__(self) -> str:
        cached = ", cached" if self.cache is not None else ""
        return f"SegmentationDataset({self.source!r}, split={self.split!r}, n={len(self)}{cached})"
