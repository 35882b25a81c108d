"""Pretrained encoder weights: from the libraries' own hub download, or a local file.

``encoder_weights`` of a zoo model is one of:

* a library tag such as ``imagenet``: smp (smp encoders) or timm (``tu-`` encoders) downloads
  the file from the Hugging Face hub into its usual cache. Before asking them, a short probe
  checks that the hub can be reached (or ``HF_HUB_OFFLINE`` is set); without network only the
  cache is used, so an offline machine gets a one-line error at once instead of a hang through
  the libraries' retries;
* ``none``: random initialisation;
* the path of a ``.safetensors`` or ``.pth``/``.pt`` file holding the encoder's state dict,
  read with ``safetensors`` or ``torch.load(weights_only=True)`` (no pickled code runs). Its
  keys and shapes are checked against the encoder: a file for another encoder is an error that
  lists the missing and unexpected keys, never a silent random initialisation.

Every path returns a record for lineage: ``{"source": "none" | "imagenet" | ... | "file",
"sha256": ..., "path": ...}``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from cmi_cli.errors import ArtifactError, ConfigError

HUB_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0
FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_SHOWN_KEYS = 4


def _weights_setting(model: nn.Module) -> str | None:
    from cmi_cli.models.smp_models import weights_tag

    params = vars(model).get("cmi_params", {})
    return weights_tag(params.get("encoder_weights"))


def is_weights_file(setting: str) -> bool:
    """Return whether an ``encoder_weights`` value names a local file rather than a tag."""
    return setting.lower().endswith(FILE_SUFFIXES) or os.sep in setting or "/" in setting


def weights_record(model: nn.Module) -> dict[str, Any]:
    """Return where ``model``'s initial encoder weights come from, without loading anything.

    Args:
        model: A model built by :func:`cmi_cli.models.registry.build_model`.

    Returns:
        ``{"source": "none"}`` (random init, and every non-zoo model), ``{"source": TAG}`` for
        a library tag, or ``{"source": "file", "path", "sha256"}`` for a local file.
    """
    setting = _weights_setting(model) if hasattr(model, "encoder") else None
    if setting is None:
        return {"source": "none"}
    if is_weights_file(setting):
        path = Path(setting).expanduser()
        digest = _sha256(path) if path.is_file() else None
        return {"source": "file", "path": str(path), "sha256": digest}
    return {"source": setting}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_weights_available(name: str, params: Mapping[str, Any]) -> None:
    """Fail early, before any data is read, if the weights a config asks for cannot be had.

    A local file must exist; a library tag needs the hub or the cache (see the module
    docstring). Cheap: builds nothing.

    Args:
        name: The registered model name.
        params: Its hyper-parameters (``encoder``, ``encoder_weights``).

    Raises:
        ConfigError: The file is missing, or the hub is unreachable and nothing is cached.
    """
    from cmi_cli.models.smp_models import weights_tag

    if name != "smp":
        return
    setting = weights_tag(params.get("encoder_weights"))
    if setting is None:
        return
    encoder = str(params.get("encoder", ""))
    if is_weights_file(setting):
        if not Path(setting).expanduser().is_file():
            raise ConfigError(
                f"encoder weights file not found: {setting} (for encoder '{encoder}')",
                hint="Set model.encoder_weights to an existing .safetensors/.pth file, or none",
            )
        return
    reason = hub_offline_reason()
    if reason is not None and not _cached(encoder, setting):
        raise _offline_error(encoder, setting, reason)


def load_pretrained(model: nn.Module) -> dict[str, Any]:
    """Load the encoder weights ``model``'s ``encoder_weights`` names, and say where from.

    Args:
        model: A model built by :func:`cmi_cli.models.registry.build_model`; models without a
            pretrained encoder are left as they are.

    Returns:
        The record of :func:`weights_record` (with the file's sha256).

    Raises:
        ConfigError: A library tag cannot be had (offline and not cached, unknown tag).
        ArtifactError: A local file is unreadable or does not fit the encoder.
    """
    record = weights_record(model)
    if record["source"] == "none":
        return record
    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    name = str(vars(model)["cmi_params"]["encoder"])
    if record["source"] == "file":
        state = read_state_dict(Path(record["path"]))
        load_encoder_state(encoder, state, name, Path(record["path"]))
        record["keys"] = len(encoder.state_dict())
        return record
    tag = str(record["source"])
    encoder.load_state_dict(_library_state(model, name, tag))
    record["library"] = _library_version(name)
    return record


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file, running no code.

    A ``.pth`` holding ``{"state_dict": {...}}`` (Lightning, many repos) is unwrapped.

    Raises:
        ArtifactError: The file is missing, damaged, or holds no mapping of tensors.
    """
    if not path.is_file():
        raise ArtifactError(f"encoder weights file not found: {path}", hint="Check the path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors, pickle and zip errors differ; all mean "not weights"
        raise ArtifactError(
            f"{path} is not a readable weights file ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ''})",
            hint="Pass a .safetensors file or a .pth written by torch.save(encoder.state_dict())",
        ) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ArtifactError(
            f"{path} holds no state dict (a mapping of names to tensors)",
            hint="Save it with torch.save(model.encoder.state_dict(), PATH)",
        )
    return dict(state)


def _candidates(state: Mapping[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
    yield dict(state)
    # Saved from the whole smp model, or from our wrapper around it.
    for prefix in ("encoder.", "model.encoder.", "net.model.encoder."):
        if any(k.startswith(prefix) for k in state):
            yield {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    # A timm classification checkpoint, for a tu- encoder (which wraps the timm model).
    yield {f"model.{k}": v for k, v in state.items()}


def load_encoder_state(
    encoder: nn.Module, state: Mapping[str, torch.Tensor], name: str, source: Path
) -> None:
    """Load ``state`` into ``encoder`` after checking that every key and shape fits.

    Raises:
        ArtifactError: Keys are missing or unexpected, or a tensor has another shape; the
            message names the encoder and lists some of each.
    """
    expected = encoder.state_dict()
    best = max(_candidates(state), key=lambda c: len(expected.keys() & c.keys()))
    missing = sorted(expected.keys() - best.keys())
    unexpected = sorted(best.keys() - expected.keys())
    wrong = sorted(
        k for k in expected.keys() & best.keys() if tuple(expected[k].shape) != tuple(best[k].shape)
    )
    # timm's features-only encoder drops the classifier head a timm checkpoint carries.
    head_only = name.startswith("tu-") and not missing
    if missing or wrong or (unexpected and not head_only):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_some(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_some(unexpected)})")
        if wrong:
            shapes = ", ".join(
                f"{k} {tuple(best[k].shape)} != {tuple(expected[k].shape)}" for k in wrong[:2]
            )
            parts.append(f"{len(wrong)} of another shape ({shapes})")
        raise ArtifactError(
            f"weights file {source} does not fit encoder '{name}': {'; '.join(parts)} keys",
            hint=f"Pass a state dict of a '{name}' encoder, or set the encoder it was saved from",
        )
    encoder.load_state_dict({k: best[k] for k in expected}, strict=True)


def _some(keys: list[str]) -> str:
    more = f", ... {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more


def save_encoder_weights(model: nn.Module, path: Path) -> Path:
    """Write ``model``'s encoder state dict to ``path`` (``.safetensors`` or ``.pth``).

    The file loads back through ``model.encoder_weights=PATH`` into any model with the same
    encoder. Written atomically.
    """
    from cmi_cli.utils.files import atomic_write_bytes

    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        data = save(state)
    else:
        import io

        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return path


def hub_offline_reason(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Return why the model hub cannot be used now, or None when it answers.

    ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set means offline on purpose; otherwise a
    TCP connection to the hub (``HF_ENDPOINT``) is tried for at most ``timeout`` seconds, name
    lookup included, so that a machine without network learns it in seconds.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    url = urlparse(os.environ.get("HF_ENDPOINT") or HUB_ENDPOINT)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    # A thread bounds the name lookup too, which the socket timeout does not cover.
    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return f"{host} did not answer within {timeout:g} s"
    if outcome[0] is not None:
        return f"{host} cannot be reached ({type(outcome[0]).__name__})"
    return None


def _offline_error(encoder: str, tag: str, reason: str) -> ConfigError:
    return ConfigError(
        f"cannot get '{tag}' weights for encoder '{encoder}': no network ({reason}) "
        "and they are not in the local cache",
        hint="Pass a local file with model.encoder_weights=/path/to/encoder.safetensors "
        "(or .pth), or model.encoder_weights=none for random initialisation",
    )


@contextmanager
def _offline(enabled: bool) -> Iterator[None]:
    """Make huggingface_hub use its cache only (as ``HF_HUB_OFFLINE=1`` would) while active."""
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _cached(encoder: str, tag: str) -> bool:
    """Return whether the library's cache already holds the weights (checked offline)."""
    from huggingface_hub import try_to_load_from_cache

    repo, filename, revision = _hub_file(encoder, tag)
    if repo is None:
        return False
    found = try_to_load_from_cache(repo, filename, revision=revision)
    return isinstance(found, str)


def _hub_file(encoder: str, tag: str) -> tuple[str | None, str, str | None]:
    """Return ``(repo, file, revision)`` on the hub of an encoder's pretrained weights."""
    if encoder.startswith("tu-"):
        import timm

        try:
            cfg = timm.models.get_pretrained_cfg(encoder[3:])
        except Exception:  # an unknown tag: timm itself reports it when loading
            return None, "", None
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not hub_id:
            return None, "", None
        return str(hub_id), "model.safetensors", None
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
    if tag not in settings:
        return None, "", None
    return settings[tag]["repo_id"], "model.safetensors", settings[tag].get("revision")


def _library_state(model: nn.Module, encoder: str, tag: str) -> dict[str, torch.Tensor]:
    """Build the encoder with the library's pretrained weights and return its state dict."""
    import segmentation_models_pytorch as smp

    params = vars(model)["cmi_params"]
    if not encoder.startswith("tu-"):
        known = smp.encoders.encoders[encoder]["pretrained_settings"]
        if tag not in known:
            tags = ", ".join(known) or "none"
            raise ConfigError(
                f"encoder '{encoder}' has no '{tag}' weights (it has: {tags})",
                hint="Set model.encoder_weights to one of those, a local file, or none",
            )
    elif tag != "imagenet":
        raise ConfigError(
            f"timm encoder '{encoder}' takes encoder_weights imagenet, none or a file, not '{tag}'",
            hint="Pick timm's pretrained variant in the name: model.encoder=tu-NAME.TAG",
        )
    reason = hub_offline_reason()
    if reason is not None and not _cached(encoder, tag):
        raise _offline_error(encoder, tag, reason)
    try:
        with _offline(reason is not None):
            built = smp.encoders.get_encoder(
                encoder,
                in_channels=int(params.get("in_channels", 3)),
                depth=int(params.get("encoder_depth", 5)),
                weights=True if encoder.startswith("tu-") else tag,
            )
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        # huggingface_hub's errors derive from these (HTTP, offline, missing entry).
        if reason is not None:
            raise _offline_error(encoder, tag, reason) from None
        raise ConfigError(
            f"cannot get '{tag}' weights for encoder '{encoder}' "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]})",
            hint="Pass a local file with model.encoder_weights=/path/to/encoder.safetensors",
        ) from None
    return dict(built.state_dict())


def _library_version(encoder: str) -> str:
    from importlib.metadata import version

    if encoder.startswith("tu-"):
        return f"timm {version('timm')}"
    return f"segmentation-models-pytorch {version('segmentation-models-pytorch')}"
