"""Per-batch augmentation and normalisation in torch, on whatever device the batch is on.

Loaders yield ``(images uint8 [B, S, S, 3], masks uint8 [B, S, S])``: the pairs exactly as
the packed cache stores them, a quarter of the bytes of float32 to move between processes
and to the GPU. The DataModule turns a batch into model input after it reaches the device:

* training: random zoom with a random window (a crop when zoomed in, a pad when zoomed
  out), horizontal flip and colour jitter, one draw per sample, then normalisation;
* evaluation: normalisation only, which equals :class:`~cmi_cli.data.transforms.EvalTransform`
  (the numpy preprocessing ONNX serving uses) up to float rounding.

Images are resampled bilinearly and masks with nearest neighbour, so class ids are never
blended; pixels added by padding are black in the image and the ignore id in the mask.
Random parameters are drawn on the CPU from ``generator`` (torch's global one by default), so
a seeded run augments the same way on any device and with any number of loader workers.

Imports torch at module level: only training code imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cmi_cli.classes import IGNORE_INDEX

# ITU-R 601 luma weights, as Pillow's "L" conversion uses.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class BatchAugment:
    """Random training augmentation of a batch (see the module docstring).

    Attributes:
        hflip: Flip each sample left-right with probability 1/2.
        scale: Zoom range: a sample is scaled by a factor drawn uniformly from it, then an
            ``S x S`` window is placed at a random offset.
        color_jitter: Brightness, contrast and saturation change by factors in ``1 ± this``.
    """

    hflip: bool = True
    scale: tuple[float, float] = (0.75, 1.25)
    color_jitter: float = 0.2

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
        x, y = to_float_chw(images), masks
        n = x.shape[0]
        if self.color_jitter > 0:
            lo, hi = 1 - self.color_jitter, 1 + self.color_jitter
            factors = _uniform((n, 3), lo, hi, generator).to(x.device)
            x = jitter_colors(x, factors[:, 0], factors[:, 1], factors[:, 2])
        zoom = _uniform((n,), *self.scale, generator)
        shift = _uniform((n, 2), -1.0, 1.0, generator) * (zoom - 1).abs()[:, None]
        flip = torch.ones(n)
        if self.hflip:
            flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
        if torch.any(zoom != 1) or torch.any(flip < 0):
            x, y = warp(x, y, zoom.to(x.device), shift.to(x.device), flip.to(x.device))
        return x, y.to(torch.int64)


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


def jitter_colors(
    images: torch.Tensor,
    brightness: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
) -> torch.Tensor:
    """Scale brightness, contrast and saturation of each sample by its own factor.

    Brightness scales the pixels, contrast moves them about the sample's mean grey and
    saturation about each pixel's grey, in that order. As all three are linear in the pixels
    and the luma weights sum to one, they fold into one pass:
    ``out = c*b*s*x + c*b*(1-s)*grey(x) + (1-c)*b*mean_grey(x)``.

    Args:
        images: float ``[B, 3, H, W]`` in 0..255 (left unchanged).
        brightness: ``[B]`` factors; 1 leaves a sample as it is, as do the others.
        contrast: ``[B]`` factors.
        saturation: ``[B]`` factors.

    Returns:
        float32 ``[B, 3, H, W]`` clipped to 0..255.
    """
    r, g, b = _LUMA
    grey = (images[:, 0] * r).add_(images[:, 1], alpha=g).add_(images[:, 2], alpha=b)
    mean_grey = grey.mean((1, 2))
    cb = contrast * brightness
    per_pixel = grey.mul_((cb * (1 - saturation)).view(-1, 1, 1))
    per_pixel.add_(((1 - contrast) * brightness * mean_grey).view(-1, 1, 1))
    out = images * (cb * saturation).view(-1, 1, 1, 1)
    return out.add_(per_pixel.unsqueeze(1)).clamp_(0, 255)


def warp(
    images: torch.Tensor,
    masks: torch.Tensor,
    zoom: torch.Tensor,
    shift: torch.Tensor,
    flip: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zoom, shift and flip each sample about the centre, keeping the output size.

    In coordinates where the frame spans -1..1, output point ``p`` shows source point
    ``flip * (p - shift) / zoom``: the scaled image sits at ``shift``, so ``|shift| <=
    |zoom - 1|`` keeps the frame inside a zoomed-in image and a zoomed-out one inside the frame.

    Args:
        images: float ``[B, 3, H, W]``.
        masks: ``[B, H, W]`` class ids (any integer type).
        zoom: ``[B]`` scale factors (> 1 enlarges).
        shift: ``[B, 2]`` offsets (x, y) of the scaled image's centre.
        flip: ``[B]`` of 1 or -1 (-1 mirrors left-right).

    Returns:
        ``(images, masks)``: outside the source, images are 0 and masks ``IGNORE_INDEX``.
    """
    n = images.shape[0]
    theta = torch.zeros(n, 2, 3, dtype=torch.float32, device=images.device)
    theta[:, 0, 0] = flip / zoom
    theta[:, 0, 2] = -flip * shift[:, 0] / zoom
    theta[:, 1, 1] = 1 / zoom
    theta[:, 1, 2] = -shift[:, 1] / zoom
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Ids shifted by one, so the zeros padding brings in marks "outside" rather than id 0.
    shifted = masks.to(torch.float32).add_(1).unsqueeze(1)
    picked = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    ids = picked.squeeze(1).to(torch.int64).sub_(1)
    return out, ids.masked_fill_(ids < 0, IGNORE_INDEX)


def _uniform(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None
) -> torch.Tensor:
    return torch.rand(shape, generator=generator) * (high - low) + low


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
