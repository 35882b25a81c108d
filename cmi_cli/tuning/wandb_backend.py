"""The W&B engine: a real W&B sweep made from the same spec, with agents running ``cmi train``.

W&B's server chooses the values and stops runs (hyperband); each trial is a normal run
logged to the sweep. Besides the in-process agent that ``cmi sweep --backend wandb`` starts,
the sweep's ``command`` lets ``wandb agent ENTITY/PROJECT/SWEEP_ID`` on any machine run
``cmi train`` with the sweep's values as Hydra overrides.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cmi_cli.console import info, warn
from cmi_cli.errors import CmiError, UsageError
from cmi_cli.tuning.finish import SweepResult, finish_sweep
from cmi_cli.tuning.report import TrialRow
from cmi_cli.tuning.spec import SweepSpec
from cmi_cli.tuning.trial import override_key

NO_LOGIN = "W&B sweeps need a W&B server: run `wandb login` or use --backend optuna"
DEFAULT_PROJECT = "cmi"


def check_wandb_ready() -> None:
    """Fail at once, in one line, when no W&B server can be reached.

    Raises:
        UsageError: Not logged in, or W&B switched to offline/disabled mode.
    """
    from cmi_cli.training.wandb_setup import wandb_logged_in

    mode = os.environ.get("WANDB_MODE", "")
    if mode in ("offline", "disabled", "dryrun"):
        raise UsageError(
            f"W&B sweeps need a W&B server, but WANDB_MODE={mode}: unset it or use --backend optuna"
        )
    if not wandb_logged_in():
        raise UsageError(NO_LOGIN)


def wandb_sweep_config(spec: SweepSpec, fixed: Sequence[str], name: str) -> dict[str, Any]:
    """Return the W&B sweep config: the spec as written, plus its name and agent command.

    The command runs ``cmi train`` with the fixed overrides, W&B logging in the sweep's group,
    and the sampled values as ``key=value`` (W&B's ``${args_no_hyphens}``).
    """
    config = {k: v for k, v in spec.raw.items() if k not in ("project", "entity")}
    config["name"] = name
    config.setdefault("metric", {"name": spec.metric, "goal": spec.goal})
    config["program"] = "cmi_cli"
    config["command"] = [
        "${env}",
        "${interpreter}",
        "-m",
        "cmi_cli",
        "train",
        *(o for o in fixed if override_key(o) != "logger"),
        "logger=wandb",
        f"logger.group={name}",
        "${args_no_hyphens}",
    ]
    return config


def values_from_wandb_config(spec: SweepSpec, config: Mapping[str, Any]) -> dict[str, Any]:
    """Read each searched parameter's value from a run's ``wandb.config``.

    W&B keeps a dotted name as one key, and nested ``parameters:`` as nested mappings.
    """
    values: dict[str, Any] = {}
    for p in spec.searched:
        if p.key in config:
            values[p.key] = config[p.key]
            continue
        node: Any = config
        for part in p.key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            raise CmiError(f"W&B gave no value for sweep parameter '{p.key}'")
        values[p.key] = node
    return values


def run_wandb_sweep(
    spec: SweepSpec,
    project_root: Path | None = None,
    *,
    overrides: Sequence[str] = (),
    n_trials: int | None = None,
    study_name: str | None = None,
    sweep_dir: Path | None = None,
) -> SweepResult:
    """Create a W&B sweep from ``spec`` and run an agent for ``n_trials`` runs here.

    Args:
        spec: The parsed sweep spec (its ``project``/``entity`` keys choose the W&B project).
        project_root: The project (data, configs); the current directory when None.
        overrides: Fixed ``cmi train`` overrides applied to every run.
        n_trials: Runs this agent does; default the grid size, the spec's run_cap, or 10.
        study_name: The sweep's name and the runs' W&B group; default the spec's name.
        sweep_dir: Where the runs and the report go; default ``sweeps/<name>``.

    Raises:
        UsageError: Without a W&B login, at once (nothing is created).
    """
    check_wandb_ready()
    import wandb

    from cmi_cli.tuning.optuna_space import default_trials
    from cmi_cli.tuning.trial import check_fixed_overrides, check_spec_keys

    root = Path(project_root or Path.cwd()).resolve()
    name = study_name or spec.name or "sweep"
    folder = Path(sweep_dir) if sweep_dir is not None else root / "sweeps" / name
    folder = (root / folder).resolve() if not folder.is_absolute() else folder
    fixed = [o for o in overrides if override_key(o) != "logger"] + ["logger=wandb"]
    check_fixed_overrides(spec, fixed)
    check_spec_keys(spec, fixed, root)
    folder.mkdir(parents=True, exist_ok=True)
    project = str(spec.raw.get("project") or DEFAULT_PROJECT)
    entity = spec.raw.get("entity")
    sweep_id = wandb.sweep(
        wandb_sweep_config(spec, overrides, name), entity=entity, project=project
    )
    more = f"wandb agent {_path(entity, project, sweep_id)}"
    info(f"W&B sweep {sweep_id} in project {project}; start more agents with: {more}")
    rows: list[TrialRow] = []
    wandb.agent(
        sweep_id,
        function=lambda: _agent_trial(spec, fixed, root, folder, name, rows),
        entity=entity,
        project=project,
        count=n_trials or default_trials(spec),
    )
    return finish_sweep(rows, spec, name, folder, f"wandb:{_path(entity, project, sweep_id)}", root)


def _path(entity: Any, project: str, sweep_id: str) -> str:
    return "/".join(str(p) for p in (entity, project, sweep_id) if p)


def _agent_trial(
    spec: SweepSpec,
    fixed: Sequence[str],
    root: Path,
    folder: Path,
    name: str,
    rows: list[TrialRow],
) -> None:
    """One agent run: the sweep's values -> a normal training run logged to the sweep."""
    import wandb

    from cmi_cli.tuning.trial import run_trial

    run = wandb.init(group=name)
    values = values_from_wandb_config(spec, dict(run.config))
    number = len(rows)
    started = time.perf_counter()
    row = TrialRow(number=number, state="failed", value=None, values=values)
    rows.append(row)
    try:
        with warnings.catch_warnings():
            # Lightning's logger reusing the agent's run is what we want here.
            warnings.filterwarnings("ignore", message=".*wandb run already in progress.*")
            outcome = run_trial(
                spec,
                values,
                fixed=fixed,
                project_root=root,
                run_name=f"{name}-{run.id}",
                runs_dir=folder / "runs",
                group=name,
            )
    except CmiError:
        raise
    except Exception as exc:  # the agent marks the run failed; the sweep goes on
        row.error = f"{type(exc).__name__}: {exc}"[:500]
        warn(f"W&B run {run.id} failed: {row.error}")
        raise
    finally:
        row.seconds = time.perf_counter() - started
    row.state = "complete" if outcome.value is not None else "failed"
    row.value = outcome.value
    row.run_dir = str(outcome.run_dir)
    # W&B ranks runs by the metric's last logged value; the local report uses the best epoch.
    row.overrides = [o for o in outcome.overrides if o != "logger=wandb"]
