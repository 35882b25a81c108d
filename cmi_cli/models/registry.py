"""Architectures selected by name, built from keyword hyper-parameters and a class count.

A model built here remembers its name and full hyper-parameters (``cmi_name``, ``cmi_params``,
``cmi_num_classes``) so that a checkpoint can record them and rebuild the same architecture.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from cmi_cli.errors import ArtifactError, ConfigError

ModelT = TypeVar("ModelT", bound=type[nn.Module])

_REGISTRY: dict[str, type[nn.Module]] = {}
# Modules whose import registers the packaged architectures.
_BUILTIN_MODULES = (
    "cmi_cli.models.mini_unet",
    "cmi_cli.models.fast_unet",
    "cmi_cli.models.smp_models",
)
# Keys of a model config group entry that are not hyper-parameters.
_CONFIG_KEYS = ("name", "params")


def register_model(name: str) -> Callable[[ModelT], ModelT]:
    """Register an ``nn.Module`` class under ``name``.

    The class must accept ``num_classes`` plus keyword-only hyper-parameters with defaults.

    Args:
        name: The name configs and checkpoints use for the architecture.

    Returns:
        A class decorator that registers and returns the class unchanged.
    """

    def decorator(cls: ModelT) -> ModelT:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = cls
        return cls

    return decorator


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available_models() -> list[str]:
    """Return the registered architecture names, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def _hyper_parameters(cls: type[nn.Module]) -> dict[str, inspect.Parameter]:
    signature = inspect.signature(cls.__init__)
    return {
        key: p
        for key, p in signature.parameters.items()
        if key not in ("self", "num_classes")
        and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def default_params(name: str) -> dict[str, Any]:
    """Return the default hyper-parameters of the architecture ``name``.

    Args:
        name: A registered architecture name.

    Returns:
        A mapping of hyper-parameter name to default value.
    """
    cls = _lookup(name)
    return {key: p.default for key, p in _hyper_parameters(cls).items()}


def _lookup(name: str) -> type[nn.Module]:
    known = available_models()
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, known, n=1)
    suggestion = f"Did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"Unknown model {name!r}",
        hint=f"{suggestion}Known models: {', '.join(known)}.",
    )


def build_model(name: str, num_classes: int, **params: Any) -> nn.Module:
    """Build the architecture ``name`` with ``num_classes`` output channels.

    Args:
        name: A registered architecture name (see :func:`available_models`).
        num_classes: Number of output logit channels.
        **params: Hyper-parameters of the architecture; missing ones take their defaults.

    Returns:
        The model, carrying ``cmi_name``, ``cmi_num_classes`` and the full ``cmi_params``.

    Raises:
        ConfigError: The name, a parameter name or a parameter value is not valid.
    """
    cls = _lookup(name)
    accepted = _hyper_parameters(cls)
    # A class taking **kwargs (the smp zoo) passes further keys on to its library.
    open_ended = any(
        p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values()
    )
    for key in params:
        if key not in accepted and not open_ended:
            close = difflib.get_close_matches(key, list(accepted), n=1)
            suggestion = f"Did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"Unknown parameter {key!r} for model {name!r}",
                hint=f"{suggestion}Accepted: {', '.join(accepted) or 'none'}.",
            )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(
            f"num_classes must be a positive integer, got {num_classes!r}",
            hint="Set data.num_classes in the data config.",
        )
    full = {key: params.get(key, p.default) for key, p in accepted.items()}
    full.update({key: value for key, value in params.items() if key not in accepted})
    try:
        model = cls(num_classes=num_classes, **full)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"Invalid parameters for model {name!r}: {_first_line(exc)}",
            hint=f"Check model.params; defaults are {default_params(name)}.",
        ) from exc
    # Plain instance attributes (not buffers): they travel with the object, not the state_dict.
    vars(model).update(cmi_name=name, cmi_num_classes=num_classes, cmi_params=full)
    return model


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip("'\"").splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def params_from_config(model_cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return ``(name, hyper-parameters)`` of a ``model`` config group entry.

    An entry holds ``name`` and ``params``; every other key of the entry is a hyper-parameter
    too, so that the zoo's ``model.arch=FPN model.encoder=resnet18`` read as plainly as
    ``model.params.width=32`` does for the small U-Nets. A top-level key wins over the same
    key in ``params``.

    Args:
        model_cfg: The ``model`` mapping of the composed config (plain values).
    """
    name = str(model_cfg["name"])
    params = dict(model_cfg.get("params") or {})
    params.update({str(k): v for k, v in model_cfg.items() if k not in _CONFIG_KEYS})
    return name, params


def input_divisor(model: nn.Module) -> int:
    """Return the number image height and width must be a multiple of (1: any size)."""
    return int(getattr(model, "divisor", 1))


def check_image_size(model: nn.Module, size: int, where: str = "data.image_size") -> None:
    """Raise a one-line ConfigError if ``size`` does not suit the model's output stride.

    Args:
        model: A model built by :func:`build_model`.
        size: The square input size the model will see.
        where: The config key or option that set ``size``, for the message.
    """
    divisor = input_divisor(model)
    if divisor > 1 and int(size) % divisor:
        lower = max(divisor, int(size) // divisor * divisor)
        name = vars(model).get("cmi_params", {}).get("encoder", vars(model).get("cmi_name"))
        raise ConfigError(
            f"{where}={size} is not a multiple of {divisor}, the output stride of encoder '{name}'",
            hint=f"Use {lower} or {lower + divisor}, e.g. {where}={lower + divisor}",
        )


def zoo_record(model: nn.Module) -> dict[str, Any]:
    """Return ``{"architecture", "encoder", "input_divisor"}`` of a model, for lineage.

    Zoo models give smp's architecture and the encoder name; the small U-Nets give their
    registered name and no encoder.
    """
    arch = getattr(model, "arch", None) or vars(model).get("cmi_name")
    return {
        "architecture": arch,
        "encoder": getattr(model, "encoder_name", None),
        # Export, serving and prediction sizes must be multiples of this.
        "input_divisor": input_divisor(model),
    }


def model_spec(model: nn.Module) -> dict[str, Any]:
    """Return what rebuilds ``model``: ``{"name", "num_classes", "params"}``.

    Args:
        model: A model made by :func:`build_model`.

    Returns:
        A JSON-safe mapping for checkpoints and ONNX metadata.
    """
    record = vars(model)
    if "cmi_name" not in record:
        raise ValueError("model was not built by cmi_cli.models.build_model")
    spec: dict[str, Any] = {
        "name": record["cmi_name"],
        "num_classes": record["cmi_num_classes"],
        "params": dict(record["cmi_params"]),
    }
    if record.get("cmi_pruned"):
        spec["pruned"] = {k: dict(v) for k, v in record["cmi_pruned"].items()}
    return spec


def build_from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from a mapping returned by :func:`model_spec`.

    A channel-pruned model's spec also holds ``pruned``: the channel counts of every
    convolution and batch norm (see :func:`layer_shapes`). The architecture is then built as
    registered and those layers are replaced by layers of the recorded sizes, so a pruned
    checkpoint loads without any change to the model's class.

    Args:
        spec: Mapping with ``name``, ``num_classes``, ``params`` and optionally ``pruned``.

    Returns:
        A freshly initialised model of the recorded architecture.

    Raises:
        ArtifactError: The mapping lacks a key.
    """
    missing = [key for key in ("name", "num_classes", "params") if key not in spec]
    if missing:
        raise ArtifactError(
            f"Model record lacks {', '.join(missing)}",
            hint="The artifact was not written by cmi; retrain or re-export it.",
        )
    model = build_model(str(spec["name"]), int(spec["num_classes"]), **dict(spec["params"]))
    pruned = spec.get("pruned")
    if pruned:
        _resize_layers(model, pruned)
        vars(model)["cmi_pruned"] = {k: dict(v) for k, v in pruned.items()}
    return model


_RESIZABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)


def layer_shapes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Return the channel counts of every convolution and batch norm of ``model``, by path.

    Convolutions give ``in_channels``, ``out_channels`` and ``groups``; batch norms give
    ``num_features``. Recorded in a pruned model's spec as ``pruned``.
    """
    shapes: dict[str, dict[str, int]] = {}
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            shapes[path] = {
                "in_channels": module.in_channels,
                "out_channels": module.out_channels,
                "groups": module.groups,
            }
        elif isinstance(module, nn.BatchNorm2d):
            shapes[path] = {"num_features": module.num_features}
    return shapes


def _resized(old: nn.Module, shape: Mapping[str, int]) -> nn.Module:
    if isinstance(old, nn.BatchNorm2d):
        return nn.BatchNorm2d(
            int(shape["num_features"]),
            eps=old.eps,
            momentum=old.momentum,
            affine=old.affine,
            track_running_stats=old.track_running_stats,
        )
    conv: Any = old
    kwargs = {
        "kernel_size": conv.kernel_size,
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "groups": int(shape.get("groups", conv.groups)),
        "bias": conv.bias is not None,
        "padding_mode": conv.padding_mode,
    }
    if isinstance(old, nn.ConvTranspose2d):
        kwargs["output_padding"] = conv.output_padding
    return type(old)(int(shape["in_channels"]), int(shape["out_channels"]), **kwargs)


def _resize_layers(model: nn.Module, shapes: Mapping[str, Mapping[str, int]]) -> None:
    modules = dict(model.named_modules())
    for path, shape in shapes.items():
        old = modules.get(path)
        if not isinstance(old, _RESIZABLE) or not path:
            raise ArtifactError(
                f"pruned layer {path!r} is not a convolution or batch norm of "
                f"{vars(model).get('cmi_name')!r}",
                hint="The pruned checkpoint was made from another architecture; prune again",
            )
        try:
            new = _resized(old, shape)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"pruned layer {path!r} has an invalid shape record ({exc})",
                hint="The checkpoint is damaged; prune the parent again",
            ) from None
        parent_path, _, attr = path.rpartition(".")
        setattr(modules[parent_path] if parent_path else model, attr, new)
