"""The model zoo: every architecture and encoder of segmentation-models-pytorch (and timm).

One registered name, ``smp``, covers them all; ``arch`` picks the decoder (Unet, FPN,
DeepLabV3Plus, Segformer, UPerNet, ...) and ``encoder`` the backbone (an smp encoder such as
``resnet34`` or ``mit_b0``, or any timm model as ``tu-<name>``). The network is always built
with random weights: pretrained encoder weights are a separate step
(:func:`cmi_cli.models.weights.load_pretrained`), so that rebuilding a trained checkpoint never
reaches for the network.

smp and timm are imported inside functions only: this module is imported by the registry, which
``cmi --help`` must not make import any ML library beyond what it already has.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cmi_cli.errors import ConfigError
from cmi_cli.models.registry import register_model

# The architectures the docs and presets name; smp accepts a few more (see arch_names()).
ZOO_ARCHITECTURES = ("Unet", "FPN", "DeepLabV3Plus", "Segformer", "UPerNet")
TIMM_PREFIX = "tu-"
NO_WEIGHTS = ("none", "null", "")


def arch_names() -> dict[str, str]:
    """Return smp's architectures as ``{lower-case name: class name}``."""
    import segmentation_models_pytorch as smp

    return {key: cls.__name__ for key, cls in smp.MODEL_ARCHITECTURES_MAPPING.items()}


def canonical_arch(arch: str) -> str:
    """Return smp's spelling of ``arch`` (case-insensitive), or raise a one-line ConfigError."""
    names = arch_names()
    key = str(arch).lower().replace("_", "").replace("-", "")
    if key in names:
        return names[key]
    known = sorted(names.values())
    close = difflib.get_close_matches(str(arch), known, n=1, cutoff=0.5)
    close = close or difflib.get_close_matches(key, list(names), n=1, cutoff=0.5)
    suggestion = f"did you mean '{names.get(close[0], close[0])}'? " if close else ""
    raise ConfigError(
        f"unknown model.arch '{arch}' ({suggestion}known: {', '.join(known)})",
        hint="Set model.arch to one of the names above, e.g. model.arch=Unet",
    )


@functools.cache
def _encoder_names() -> tuple[list[str], list[str]]:
    import segmentation_models_pytorch as smp
    import timm

    return list(smp.encoders.get_encoder_names()), list(timm.list_models())


def check_encoder(encoder: str) -> str:
    """Return ``encoder`` if smp or timm knows it, else raise a ConfigError with suggestions.

    Args:
        encoder: An smp encoder name (``resnet34``, ``mit_b0``) or ``tu-<timm model>``
            (optionally with a pretrained tag: ``tu-convnext_tiny.fb_in22k``).
    """
    import timm

    smp_names, timm_names = _encoder_names()
    name = str(encoder)
    if name.startswith(TIMM_PREFIX):
        if timm.is_model(name[len(TIMM_PREFIX) :]):
            return name
        pool = [TIMM_PREFIX + n for n in timm_names]
    elif name in smp_names:
        return name
    else:
        pool = smp_names + [TIMM_PREFIX + n for n in timm_names]
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
    if not name.startswith(TIMM_PREFIX):
        more = difflib.get_close_matches(TIMM_PREFIX + name, pool, n=2)
        close += [c for c in more if c not in close]
    suggestion = f"did you mean {', '.join(repr(c) for c in close[:3])}? " if close else ""
    raise ConfigError(
        f"unknown model.encoder '{name}' ({suggestion}smp encoders or tu-<timm model>)",
        hint="List them with: python -c \"import timm; print(timm.list_models('*mobilenet*'))\"",
    )


def weights_tag(encoder_weights: Any) -> str | None:
    """Return the weights setting as ``None`` (random init), a library tag or a file path."""
    if encoder_weights is None or str(encoder_weights).strip().lower() in NO_WEIGHTS:
        return None
    return str(encoder_weights)


class ExportableAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` computed from an integral image, so it exports with dynamic sizes.

    The TorchScript ONNX exporter cannot export adaptive pooling to an output larger than 1 when
    height and width are dynamic (UPerNet's and PSPNet's pyramid pooling). Each output cell is
    the mean over PyTorch's own bins ``[floor(i*H/k), ceil((i+1)*H/k))``, taken as four lookups
    in the cumulative sums: the same numbers, from ops (CumSum, Gather, shape arithmetic) that
    ONNX has for any input size. It holds no weights, so checkpoints are unchanged.

    Args:
        output_size: The output height and width (an int for a square).
    """

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        size = (output_size, output_size) if isinstance(output_size, int) else output_size
        self.out_h, self.out_w = int(size[0]), int(size[1])

    @staticmethod
    def _bins(length: Any, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.arange(k, device=device)
        return (i * length) // k, ((i + 1) * length + k - 1) // k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` average-pooled to ``[N, C, out_h, out_w]``."""
        h, w = x.shape[-2], x.shape[-1]
        # Integral image with a leading row and column of zeros: [N, C, H + 1, W + 1].
        integral = F.pad(x.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
        h0, h1 = self._bins(h, self.out_h, x.device)
        w0, w1 = self._bins(w, self.out_w, x.device)
        rows_end = integral.index_select(-2, h1)
        rows_start = integral.index_select(-2, h0)
        total = (
            rows_end.index_select(-1, w1)
            - rows_start.index_select(-1, w1)
            - rows_end.index_select(-1, w0)
            + rows_start.index_select(-1, w0)
        )
        area = ((h1 - h0).unsqueeze(1) * (w1 - w0).unsqueeze(0)).to(x.dtype)
        return total / area


def _exportable_pooling(module: nn.Module) -> None:
    """Swap adaptive average pools with outputs over 1x1 for the exportable equivalent."""
    for name, child in module.named_children():
        if isinstance(child, nn.AdaptiveAvgPool2d):
            size: Any = child.output_size
            height, width = (size, size) if isinstance(size, int) else tuple(size)
            if height is None or width is None or (height, width) == (1, 1):
                continue  # 1x1 exports as GlobalAveragePool already
            setattr(module, name, ExportableAdaptiveAvgPool2d((int(height), int(width))))
        else:
            _exportable_pooling(child)


@register_model("smp")
class SmpSegmenter(nn.Module):
    """An smp architecture on an smp or timm encoder; returns logits [N, C, H, W].

    Args:
        num_classes: Number of output classes.
        arch: smp architecture (``Unet``, ``FPN``, ``DeepLabV3Plus``, ``Segformer``,
            ``UPerNet``, ...), case-insensitive.
        encoder: smp encoder name or ``tu-<timm model>``.
        encoder_weights: ``imagenet`` (the library's tag; downloaded by smp/timm), ``none``,
            or the path of a local ``.pth``/``.safetensors`` state dict of the encoder. Only
            recorded here: :func:`cmi_cli.models.weights.load_pretrained` loads them.
        encoder_depth: Number of encoder stages (5: output stride 32).
        in_channels: Number of input image channels.
        **arch_params: Further keyword arguments of the smp architecture
            (``decoder_channels``, ``decoder_dropout``, ...).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        arch: str = "Unet",
        encoder: str = "resnet18",
        encoder_weights: str | None = "none",
        encoder_depth: int = 5,
        in_channels: int = 3,
        **arch_params: Any,
    ) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.arch = canonical_arch(arch)
        self.encoder_name = check_encoder(encoder)
        if not 1 <= int(encoder_depth) <= 5:
            raise ValueError(f"encoder_depth must be between 1 and 5, got {encoder_depth}")
        self.encoder_weights = weights_tag(encoder_weights)
        self.divisor = 2 ** int(encoder_depth)
        self.model = smp.create_model(
            self.arch,
            encoder_name=self.encoder_name,
            encoder_weights=None,
            encoder_depth=int(encoder_depth),
            in_channels=int(in_channels),
            classes=int(num_classes),
            **arch_params,
        )
        _exportable_pooling(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits with the input's height and width."""
        return self.model(x)

    @property
    def encoder(self) -> nn.Module:
        """The encoder (backbone) module whose weights a pretrained file holds."""
        encoder: nn.Module = self.model.encoder
        return encoder
