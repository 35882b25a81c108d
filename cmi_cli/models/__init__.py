"""Segmentation architectures and a registry that builds them by name."""

from cmi_cli.models.registry import (
    available_models,
    build_from_spec,
    build_model,
    default_params,
    model_spec,
    register_model,
)

__all__ = [
    "available_models",
    "build_from_spec",
    "build_model",
    "default_params",
    "model_spec",
    "register_model",
]
