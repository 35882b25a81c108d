"""The default architecture: a narrow U-Net with batch norm, sized for CPU serving.

Only plain ops (Conv2d, BatchNorm2d, ReLU, MaxPool2d, bilinear/nearest resize, concat) so that
ONNX export with dynamic height and width, int8 quantization and channel pruning all work.
Each decoder stage resizes to its skip connection's size, which makes any input size valid.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from cmi_cli.models.registry import register_model

UPSAMPLE_MODES = ("bilinear", "nearest")


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """Return a 3x3 convolution (no bias: batch norm follows), batch norm and ReLU."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def double_conv_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    """Return two conv-BN-ReLU layers."""
    return nn.Sequential(
        *conv_bn_relu(in_channels, out_channels), *conv_bn_relu(out_channels, out_channels)
    )


class UpBlock(nn.Module):
    """Resize to the skip connection's size, concatenate, and apply two conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.conv = double_conv_bn(in_channels + skip_channels, skip_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Return the decoded map at the skip connection's resolution."""
        if self.mode == "bilinear":
            x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
        else:
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
        return self.conv(torch.cat([x, skip], dim=1))


@register_model("fast_unet")
class FastUNet(nn.Module):
    """U-Net with batch norm and channels ``width * 2**i`` for ``i`` in ``0..depth``.

    With the defaults (``width=16, depth=3``) the levels have 16, 32, 64 and 128 channels, the
    last being the bottleneck. Returns raw logits [N, num_classes, H, W] for any H and W.

    Args:
        num_classes: Number of output classes.
        width: Channels of the first level.
        depth: Number of down-sampling steps.
        in_channels: Number of input image channels.
        upsample: ``"bilinear"`` or ``"nearest"`` resize in the decoder.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        width: int = 16,
        depth: int = 3,
        in_channels: int = 3,
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if not 1 <= depth <= 6:
            raise ValueError(f"depth must be between 1 and 6, got {depth}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        channels = [width * 2**i for i in range(depth + 1)]
        self.stem = double_conv_bn(in_channels, channels[0])
        # ceil_mode keeps at least one pixel, so inputs smaller than 2**depth still work.
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.down = nn.ModuleList(
            double_conv_bn(c_in, c_out) for c_in, c_out in itertools.pairwise(channels)
        )
        self.up = nn.ModuleList(
            UpBlock(channels[i + 1], channels[i], upsample) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits with the input's height and width."""
        x = self.stem(x)
        skips = [x]
        for block in self.down:
            x = block(self.pool(x))
            skips.append(x)
        skips.pop()  # the bottleneck output is not a skip connection
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = block(x, skip)
        return self.head(x)
