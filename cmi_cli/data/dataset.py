"""A torch ``Dataset`` over one split of a :class:`~cmi_cli.data.layout.DatasetSource`.

Imports torch at module level: only training code imports this module.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from cmi_cli.data.cache import PackedSplit
from cmi_cli.data.layout import DatasetSource, Item
from cmi_cli.data.transforms import resize_pair


class SegmentationDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Pairs of one split as ``(image uint8 [S, S, 3], mask uint8 [S, S])`` tensors.

    Every pair is squashed to ``image_size`` square, the image bilinearly and the mask with
    nearest neighbour: exactly what ``cmi data prepare`` packs, so a pair read from the cache
    equals one decoded here, pixel for pixel. Augmentation and normalisation happen per batch
    on the device (see :mod:`cmi_cli.data.batch_transforms`), which keeps the loader cheap
    and what crosses process and device boundaries uint8.

    Args:
        source: The opened dataset.
        split: Which split to serve.
        image_size: Side of the square pairs.
        limit: Serve only the first ``limit`` pairs.
        cache: The split packed by ``cmi data prepare`` at ``image_size``: pairs are copied
            out of it instead of being decoded. It must hold every pair of the split (it may
            hold more: a carved split reads from the cache of the split it came from).

    Raises:
        ValueError: If the cache holds other pairs than the split, or another size.
    """

    def __init__(
        self,
        source: DatasetSource,
        split: str,
        image_size: int,
        limit: int | None = None,
        cache: PackedSplit | None = None,
    ):
        self.source = source
        self.split = split
        self.image_size = image_size
        self.items: list[Item] = source.items(split)[:limit]
        if cache is not None:
            if cache.size != image_size:
                raise ValueError(f"the cache holds {cache.size} px pairs, not {image_size} px")
            where = {key: i for i, key in enumerate(cache.keys)}
            missing = [i.key for i in self.items if i.key not in where]
            if missing:
                raise ValueError(f"the cache lacks {len(missing)} pairs of split {split!r}")
            self._rows = [where[i.key] for i in self.items]
        self.cache = cache

    def __len__(self) -> int:
        return len(self.items)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return pair ``index`` as writable ``(image SxSx3 uint8, mask SxS uint8)`` arrays."""
        if self.cache is not None:
            return self.cache.read(self._rows[index])
        image, mask = resize_pair(*self.source.read(self.items[index]), self.image_size)
        # np.array: decoded arrays may be read-only views of Pillow's buffers.
        return np.array(image), np.array(mask)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.read(index)
        return torch.from_numpy(image), torch.from_numpy(mask)

    def __repr__(self) -> str:
        cached = ", cached" if self.cache is not None else ""
        return f"SegmentationDataset({self.source!r}, split={self.split!r}, n={len(self)}{cached})"
