"""Segmentation architectures and a registry that builds them by name.

The registry's functions are imported on first use, so that reading the model presets
(:mod:`cmi_cli.models.presets`, used by ``cmi info --models``) imports no torch.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "available_models",
    "build_from_spec",
    "build_model",
    "default_params",
    "model_spec",
    "register_model",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cmi_cli.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'cmi_cli.models' has no attribute {name!r}")
