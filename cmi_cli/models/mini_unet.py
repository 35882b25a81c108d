"""The reference baseline: a plain U-Net of the original project, kept for comparison.

Encoder blocks of two 3x3 convolutions with ReLU at 64, 128 and 256 channels, each followed by
max-pooling, a 512-channel bottleneck, transposed-convolution upsampling with skip connections
and a 1x1 head. No batch norm, as in the original.
"""

from __future__ import annotations

import torch
from torch import nn

from cmi_cli.models.registry import register_model

ENCODER_CHANNELS = (64, 128, 256)
BOTTLENECK_CHANNELS = 512


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Return two 3x3 convolutions, each followed by ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
    )


def crop_to(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Crop ``x`` on the bottom/right to the height and width of ``skip``.

    Pooling rounds odd sizes up, so the upsampled map is one pixel too large there; cropping to
    the skip connection keeps any input size working and exports to ONNX with dynamic sizes.
    """
    return x[:, :, : skip.shape[2], : skip.shape[3]]


@register_model("mini_unet")
class MiniUNet(nn.Module):
    """Plain U-Net baseline (about 7.7 M parameters); returns raw logits [N, C, H, W].

    Args:
        num_classes: Number of output classes.
        in_channels: Number of input image channels.
    """

    def __init__(self, num_classes: int, *, in_channels: int = 3) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        c1, c2, c3 = ENCODER_CHANNELS
        self.enc1 = double_conv(in_channels, c1)
        self.enc2 = double_conv(c1, c2)
        self.enc3 = double_conv(c2, c3)
        # ceil_mode keeps at least one pixel, so inputs smaller than 8 pixels still work.
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.bottleneck = double_conv(c3, BOTTLENECK_CHANNELS)
        self.up3 = nn.ConvTranspose2d(BOTTLENECK_CHANNELS, c3, 2, stride=2)
        self.dec3 = double_conv(2 * c3, c3)
        self.up2 = nn.ConvTranspose2d(c3, c2, 2, stride=2)
        self.dec2 = double_conv(2 * c2, c2)
        self.up1 = nn.ConvTranspose2d(c2, c1, 2, stride=2)
        self.dec1 = double_conv(2 * c1, c1)
        self.head = nn.Conv2d(c1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits with the input's height and width."""
        s1 = self.enc1(x)
        s2 = self.enc2(self.pool(s1))
        s3 = self.enc3(self.pool(s2))
        b = self.bottleneck(self.pool(s3))
        d3 = self.dec3(torch.cat([crop_to(self.up3(b), s3), s3], dim=1))
        d2 = self.dec2(torch.cat([crop_to(self.up2(d3), s2), s2], dim=1))
        d1 = self.dec1(torch.cat([crop_to(self.up1(d2), s1), s1], dim=1))
        return self.head(d1)
