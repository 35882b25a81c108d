"""Size and compute cost of a model: parameter count and FLOPs for one forward pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cmi_cli.models.registry import build_model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of parameters of ``model``.

    Args:
        model: Any module.
        trainable_only: Count only parameters with ``requires_grad``.

    Returns:
        The number of scalar parameters.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_size: Sequence[int] = (1, 3, 256, 256)) -> int:
    """Return the FLOPs of one forward pass at ``input_size`` (2 per multiply-accumulate).

    Counted by torch's ``FlopCounterMode``, which covers convolutions (transposed too) and
    matrix products, the ops that dominate; element-wise ops such as ReLU, batch norm in
    eval mode and resizing are not counted.

    Args:
        model: The model; it is run once in eval mode on zeros, then restored to its mode.
        input_size: Input shape ``(N, C, H, W)``.

    Returns:
        The FLOP count as an integer.
    """
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(*input_size, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def describe_model(
    name: str,
    num_classes: int,
    params: Mapping[str, Any] | None = None,
    input_size: Sequence[int] = (1, 3, 256, 256),
) -> dict[str, Any]:
    """Build a model and describe its size and cost, for ``cmi info`` and reports.

    Args:
        name: A registered architecture name.
        num_classes: Number of output classes.
        params: Hyper-parameters; missing ones take their defaults.
        input_size: Input shape ``(N, C, H, W)`` used for the FLOP count.

    Returns:
        A JSON-safe mapping: ``name``, ``num_classes``, ``params`` (all hyper-parameters),
        ``num_parameters``, ``size_mb`` (float32 weights), ``input_size`` and ``gflops``.
    """
    model = build_model(name, num_classes, **dict(params or {}))
    num_parameters = count_parameters(model)
    return {
        "name": name,
        "num_classes": num_classes,
        "params": dict(vars(model)["cmi_params"]),
        "num_parameters": num_parameters,
        "size_mb": round(num_parameters * 4 / 1e6, 3),
        "input_size": list(input_size),
        "gflops": round(count_flops(model, input_size) / 1e9, 3),
    }
