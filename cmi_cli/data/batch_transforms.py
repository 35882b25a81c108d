"""Per-batch augmentation and normalisation in torch, on whatever device the batch is on.

Loaders yield ``(images uint8 [B, S, S, 3], masks uint8 [B, S, S])``: the pairs exactly as
the packed cache stores them, a quarter of the bytes of float32 to move between processes
and to the GPU. The DataModule turns a batch into model input after it reaches the device:

* training: colour jitter, then a random zoom with a random offset (a crop when zoomed in,
  a pad when zoomed out) and a horizontal flip, one draw per sample, then normalisation;
* evaluation: normalisation only, which equals :class:`~cmi_cli.data.transforms.EvalTransform`
  (the numpy preprocessing ONNX serving uses) up to float rounding.

The augmentation is kornia's ``AugmentationSequential`` with ``data_keys=["input", "mask"]``.
Kornia rather than torchvision.transforms.v2 or albumentations: it works on a whole batch on the
device with its own random parameters per sample (v2 draws one set per call, so a batch would
need a Python loop; albumentations works on numpy images in the loader workers, on the CPU), and
it applies each geometric draw to the mask with nearest-neighbour resampling, so class ids are
never blended. Pixels that padding brings in are black in the image and the ignore id in the mask.
Random parameters are drawn on the CPU from a seed taken from ``generator`` (torch's global one
by default), so a seeded run augments the same way on any device and any number of workers.

Imports torch and kornia at module level: only training code imports this module.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cmi_cli.classes import IGNORE_INDEX


@dataclass(frozen=True)
class BatchAugment:
    """Random training augmentation of a batch (see the module docstring).

    Attributes:
        hflip: Flip each sample left-right with probability 1/2.
        scale: Zoom range: a sample is scaled by a factor drawn uniformly from it and moved by
            up to half the largest change in size, within the same ``S x S`` frame.
        color_jitter: Brightness, contrast and saturation change by up to ``± this``.
    """

    hflip: bool = True
    scale: tuple[float, float] = (0.75, 1.25)
    color_jitter: float = 0.2

    @functools.cached_property
    def pipeline(self) -> Any:
        """The kornia pipeline, or None when every part is switched off."""
        import kornia.augmentation as K

        steps: list[Any] = []
        if self.color_jitter > 0:
            # Intensity only: AugmentationSequential leaves the mask alone.
            cj = float(self.color_jitter)
            steps.append(K.ColorJitter(brightness=cj, contrast=cj, saturation=cj, p=1.0))
        lo, hi = (float(v) for v in self.scale)
        if (lo, hi) != (1.0, 1.0):
            reach = max(abs(hi - 1), abs(1 - lo)) / 2
            steps.append(
                K.RandomAffine(
                    degrees=0.0,
                    translate=(reach, reach) if reach > 0 else None,
                    scale=(lo, hi),
                    padding_mode="zeros",
                    p=1.0,
                )
            )
        if self.hflip:
            steps.append(K.RandomHorizontalFlip(p=0.5))
        if not steps:
            return None
        from kornia.constants import DataKey, Resample

        # Nearest neighbour for masks (kornia's default too), stated with the corner convention
        # of the images so that the two stay aligned to the pixel.
        mask_args = {"resample": Resample.NEAREST, "align_corners": False}
        return K.AugmentationSequential(
            *steps, data_keys=["input", "mask"], extra_args={DataKey.MASK: mask_args}
        )

    def __call__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch.

        Args:
            images: ``uint8 [B, S, S, 3]`` (or float ``[B, 3, S, S]`` in 0..255).
            masks: ``[B, S, S]`` class ids.
            generator: Source of the random draws (default: torch's global generator).

        Returns:
            ``(float32 [B, 3, S, S] in 0..255, int64 [B, S, S])``.
        """
        x = to_float_chw(images)
        pipeline = self.pipeline
        if pipeline is None:
            return x, masks.to(torch.int64)
        # Ids shifted by one, so the zeros padding brings in marks "outside" rather than id 0.
        shifted = masks.to(device=x.device, dtype=torch.float32).add(1).unsqueeze(1)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        # Kornia draws from torch's global CPU generator: seed it from ours, leave it as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out, picked = pipeline(x.div(255), shifted)
        ids = picked.squeeze(1).round().to(torch.int64).sub_(1)
        return out.mul_(255).clamp_(0, 255), ids.masked_fill_(ids < 0, IGNORE_INDEX)


def to_float_chw(images: torch.Tensor) -> torch.Tensor:
    """Return images as contiguous float32 ``[B, 3, H, W]`` in 0..255.

    Args:
        images: ``uint8 [B, H, W, 3]`` as loaders yield them, or already ``[B, 3, H, W]``.
    """
    if images.dtype == torch.uint8 and images.shape[-1] == 3:
        images = images.permute(0, 3, 1, 2)
    return images.to(torch.float32).contiguous()


def normalize_batch(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Scale 0..255 RGB to 0..1, subtract ``mean`` and divide by ``std``, per channel.

    Args:
        images: ``uint8 [B, H, W, 3]`` or float ``[B, 3, H, W]`` in 0..255.
        mean: Per-channel mean of 0..1 pixels.
        std: Per-channel standard deviation of 0..1 pixels.

    Returns:
        float32 ``[B, 3, H, W]``.
    """
    x = to_float_chw(images)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255
    inv = 1 / (torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255)
    return (x - m) * inv


@dataclass(frozen=True)
class BatchPreprocess:
    """What a DataModule applies to a batch on the device: augment (training), normalise.

    Attributes:
        mean: Per-channel mean of 0..1 pixels.
        std: Per-channel standard deviation of 0..1 pixels.
        augment: The training augmentation.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    augment: BatchAugment

    def __call__(
        self,
        batch: tuple[torch.Tensor, torch.Tensor],
        train: bool,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn a loader batch into ``(float32 [B, 3, S, S], int64 [B, S, S])`` model input."""
        images, masks = batch
        if train:
            images, masks = self.augment(images, masks, generator)
        return normalize_batch(images, self.mean, self.std), masks.to(torch.int64)
