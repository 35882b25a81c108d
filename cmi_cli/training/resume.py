"""Resuming a run: its own saved config, the changes it can take mid-run, and its metrics log.

A resumed run continues as it was configured: ``runs/NAME/config.yaml`` is the base, and only
the overrides given now are applied on top and recorded under ``run.resumes`` (so the run's
config, its checkpoints' lineage and W&B all say what changed and when). A change the
checkpoint cannot honour - another model, other data, another optimiser or schedule - is
refused in one line before anything is loaded.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from cmi_cli.errors import ConfigError, UsageError
from cmi_cli.utils.files import atomic_write_text

# Keys a checkpoint fixes: its weights, class list, preprocessing and optimiser state only fit
# the values it was trained with. (run.name and run.dir choose the run; they change nothing.)
FIXED_KEYS = ("model", "data", "ckpt_path", "optim.name", "optim.scheduler")
# How batches are loaded (not which pixels they hold) may change between sessions.
MUTABLE_DATA_KEYS = frozenset(
    {
        "batch_size",
        "num_workers",
        "pin_memory",
        "persistent_workers",
        "prefetch_factor",
        "cache",
        "cache_dir",
        "augment",
    }
)
# Presets: group selections that set keys across the config rather than one node.
PRESETS = ("experiment", "debug")
HISTORY_KEY = "resumes"


def saved_config_path(run_dir: Path) -> Path:
    """The config a run was started with (and that every resume rewrites)."""
    return Path(run_dir) / "config.yaml"


def load_saved_config(run_dir: Path) -> DictConfig | None:
    """Return the run's saved config, or None if the run folder has none.

    Raises:
        ConfigError: The file exists but is not a readable YAML mapping.
    """
    from cmi_cli.config import read_yaml_mapping

    path = saved_config_path(run_dir)
    if not path.is_file():
        return None
    return read_yaml_mapping(path)


def resumed_config(
    composed: DictConfig, overrides: list[str], run_dir: Path, config_file: Path | None = None
) -> DictConfig:
    """Return the saved config of ``run_dir`` with only ``overrides`` applied and recorded.

    Args:
        composed: The config composed from the defaults and ``overrides``: group selections
            (``logger=wandb``) are taken from it, already resolved.
        overrides: The command line's ``key=value`` / ``group=option`` / ``~key`` overrides.
        run_dir: The run to resume.
        config_file: A ``--config`` file; refused, since a whole file would silently replace
            the run's values.

    Raises:
        UsageError: ``--config`` was given.
        ConfigError: An override names an unknown key or one the run cannot change.
    """
    saved = load_saved_config(run_dir)
    if saved is None:
        # A run from before config.yaml was kept: the composed config is all there is.
        return composed
    if config_file is not None:
        raise UsageError(
            "--config cannot be combined with --resume: the run continues with its saved "
            f"{saved_config_path(run_dir)}",
            hint="Pass the changes you want as key=value overrides",
        )
    cfg = saved.copy()
    applied = _apply_overrides(cfg, composed, overrides, run_dir.name)
    check_resume_change(saved, cfg, run_dir.name)
    with open_dict(cfg):
        before: Any = OmegaConf.to_container(cfg.run.get(HISTORY_KEY) or ListConfig([]))
        history = list(before)
        now = dt.datetime.now().isoformat(timespec="seconds")
        history.append({"at": now, "overrides": applied})
        cfg.run[HISTORY_KEY] = history
    OmegaConf.set_struct(cfg, True)
    return cfg


def _apply_overrides(
    cfg: DictConfig, composed: DictConfig, overrides: list[str], run_name: str
) -> list[str]:
    from cmi_cli.config import PRIMARY_GROUPS, parse_overrides, unknown_key_error

    applied = []
    for override in parse_overrides(overrides):
        key = str(override.key_or_group).lstrip("+~")
        text = str(override.input_line)
        if key in ("run.name", "run.dir"):
            continue  # they chose this run; they are not changes to it
        if key in PRESETS:
            # A preset sets keys all over the config: given again it is checked (it must not
            # change what the checkpoint fixes), not re-applied over the run's saved values.
            check_resume_change(cfg, composed, run_name)
        elif key in PRIMARY_GROUPS:
            # The group's content as composed: check_resume_change refuses a fixed one that
            # differs (model=another) and accepts it restated.
            with open_dict(cfg):
                cfg[key] = composed.get(key, {"name": "none"})
        elif override.is_delete():
            raise ConfigError(f"cannot delete config key '{key}' when resuming run {run_name!r}")
        else:
            if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
                raise unknown_key_error(key, cfg, f"the saved config of run {run_name!r}")
            OmegaConf.update(cfg, key, override.value(), force_add=False)
        applied.append(text)
    return applied


_MISSING = object()


def _changed_keys(old: Any, new: Any, prefix: str = "") -> Iterator[str]:
    """Yield the dotted keys whose values differ between two plain config trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            dotted = f"{prefix}{key}"
            if key not in old or key not in new:
                yield dotted
            else:
                yield from _changed_keys(old[key], new[key], f"{dotted}.")
    elif old != new:
        yield prefix.rstrip(".")


def _is_fixed(key: str) -> bool:
    if key.startswith("data.") and key.split(".")[1] in MUTABLE_DATA_KEYS:
        return False
    return any(key == fixed or key.startswith(f"{fixed}.") for fixed in FIXED_KEYS)


def check_resume_change(saved: DictConfig, cfg: DictConfig, run_name: str) -> None:
    """Refuse a config that changes what the run's checkpoint fixes.

    Raises:
        ConfigError: Naming the first key that differs from the saved config and may not.
    """
    old = OmegaConf.to_container(saved, resolve=True)
    new = OmegaConf.to_container(cfg, resolve=True)
    for key in _changed_keys(old, new):
        if _is_fixed(key):
            raise _refusal(key, run_name, _value(old, key), _value(new, key))


def _value(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _refusal(what: str, run_name: str, old: Any = None, new: Any = None) -> ConfigError:
    change = f" ({old!r} -> {new!r})" if old is not None or new is not None else ""
    return ConfigError(
        f"cannot change {what}{change} when resuming run {run_name!r}: its checkpoint was "
        "trained with the saved value",
        hint="Resume without it, or start a new run with another run.name",
    )


# --- logs/metrics.csv -------------------------------------------------------------------


def checkpoint_position(ckpt: dict[str, Any]) -> tuple[int, int]:
    """Return ``(epoch, global_step)`` a Lightning checkpoint was saved at."""
    return int(ckpt.get("epoch", 0)), int(ckpt.get("global_step", 0))


def keep_metrics_rows(path: Path, epoch: int, step: int) -> list[str]:
    """Cut ``metrics.csv`` back to the rows logged up to a checkpoint; return its header.

    Lightning's CSV logger deletes the file when a run starts again, and a run killed after
    its last checkpoint may have logged rows the resumed run logs again. The rows logged up
    to the checkpoint (its step, and at that step only rows of its epoch or earlier: the first
    batch after an epoch-end checkpoint logs at the same step) are kept, atomically.

    Args:
        path: The run's ``logs/metrics.csv``.
        epoch: The checkpoint's epoch.
        step: The checkpoint's global step.

    Returns:
        The kept file's header (empty if there is no file).
    """
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = [r for r in reader if _logged_before(r, epoch, step)]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, out.getvalue())
    return header


def _logged_before(row: dict[str, str], epoch: int, step: int) -> bool:
    try:
        row_step = int(float(row.get("step") or 0))
        row_epoch = int(float(row.get("epoch") or 0))
    except ValueError:
        return False
    return row_step < step or (row_step == step and row_epoch <= epoch)


# --- the checkpoint ---------------------------------------------------------------------


def prepare_resume(cfg: DictConfig, run_dir: Path, ckpt_path: Path, resume: bool) -> list[str]:
    """Check a run can resume from ``ckpt_path`` and cut its metrics log back to it.

    The checkpoint is read with ``weights_only=True`` first, so a crafted or damaged file
    fails here with one line, before Lightning opens it.

    Args:
        cfg: The config the run continues with.
        run_dir: The run folder.
        ckpt_path: The checkpoint to resume from.
        resume: Whether this is ``--resume`` of the run's own ``last.ckpt`` (its saved config
            then fixes the model and data).

    Returns:
        The header of the kept ``logs/metrics.csv`` (empty when there is none).

    Raises:
        ArtifactError: The checkpoint is unreadable or not a cmi checkpoint.
        ConfigError: ``cfg`` changes what the checkpoint fixes.
    """
    from cmi_cli.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    saved = load_saved_config(run_dir) if resume else None
    if saved is not None:
        check_resume_change(saved, cfg, run_dir.name)
    epoch, step = checkpoint_position(ckpt)
    return keep_metrics_rows(run_dir / "logs" / "metrics.csv", epoch, step)


def fit_resume_kwargs(trainer: Any, ckpt_path: Path | None) -> dict[str, Any]:
    """``Trainer.fit`` arguments to resume from ``ckpt_path`` with ``weights_only=True``.

    Lightning releases before ``fit(weights_only=...)`` rely on torch's default, which is
    ``True`` from torch 2.6 (the lower bound in pyproject).
    """
    import inspect

    if ckpt_path is None:
        return {}
    kwargs: dict[str, Any] = {"ckpt_path": str(ckpt_path)}
    if "weights_only" in inspect.signature(trainer.fit).parameters:
        kwargs["weights_only"] = True
    return kwargs


def resume_cli_config(
    overrides: list[str], config_file: Path | None, project_root: Path
) -> DictConfig:
    """The config of ``cmi train --resume``: the run's saved one plus today's overrides.

    The run is ``run.name`` (or the latest run with a ``last.ckpt``); a run without a saved
    config (or no run at all, which ``train`` reports) gets the composed config.
    """
    from cmi_cli.config import compose_train_config
    from cmi_cli.training.runs import latest_run

    composed = compose_train_config(overrides, config_file=config_file, project_root=project_root)
    runs_dir = Path(project_root) / str(composed.run.dir)
    name = composed.run.name or latest_run(runs_dir)
    if not name:
        return composed
    cfg = resumed_config(composed, overrides, runs_dir / str(name), config_file)
    with open_dict(cfg):
        cfg.run.name = str(name)
        cfg.run.dir = str(composed.run.dir)
    return cfg
