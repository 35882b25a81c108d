"""The Optuna engine: trials of one study in this process or in N local worker processes.

The study lives in an RDB storage, SQLite in the sweep folder by default. Rerunning with the
same study name continues it: ``n_trials`` is the total the study should hold, so a rerun
asking for more adds trials and one asking for as many only redraws the report. Workers on
several machines share a study through a server database (``postgresql://...``); each stops
when the study holds ``n_trials`` trials.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmi_cli.console import err_console, info, is_quiet, is_verbose, warn
from cmi_cli.errors import CmiError
from cmi_cli.tuning.finish import SweepResult
from cmi_cli.tuning.interrupt import (
    SweepInterrupted,
    fail_interrupted,
    interruptible,
    interruption,
    mark_worker,
)
from cmi_cli.tuning.optuna_space import default_trials, grid_size, make_sampler, suggest_values
from cmi_cli.tuning.optuna_study import (
    SweepPlan,
    counted_trials,
    load_or_create_study,
    study_rows,
)
from cmi_cli.tuning.spec import SweepSpec

if TYPE_CHECKING:
    import optuna


def make_objective(plan: SweepPlan) -> Callable[[optuna.Trial], float]:
    """Return the objective: sample values, train a run, return its best epoch's metric."""
    import optuna

    from cmi_cli.tuning.trial import free_run_name, param_overrides, run_trial

    spec = plan.spec

    def objective(trial: optuna.Trial) -> float:
        mark_worker(trial)
        try:
            return attempt(trial)
        except BaseException as exc:
            stop = interruption(exc)
            if stop is None:
                raise
            fail_interrupted(trial, f"{stop} in worker pid {os.getpid()}")
            raise stop from None

    def attempt(trial: optuna.Trial) -> float:
        values = suggest_values(trial, spec)
        name = free_run_name(plan.runs_dir, f"{plan.study_name}-t{trial.number}")
        trial.set_user_attr("values", values)
        trial.set_user_attr("overrides", param_overrides(spec, values, plan.fixed))
        trial.set_user_attr("run_dir", str(plan.runs_dir / name))
        callbacks: list[Any] = []
        if spec.early_terminate:
            from cmi_cli.tuning.pruning import OptunaPruning

            callbacks.append(OptunaPruning(trial, spec.metric))
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        try:
            outcome = run_trial(
                spec,
                values,
                fixed=plan.fixed,
                project_root=plan.project_root,
                run_name=name,
                runs_dir=plan.runs_dir,
                group=plan.study_name,
                extra_callbacks=callbacks,
            )
        except (CmiError, optuna.TrialPruned):
            raise
        except Exception as exc:  # one bad point (NaN loss, out of memory) must not end a sweep
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            warn(f"trial {trial.number} failed ({shown}): {type(exc).__name__}: {exc}")
            return float("nan")
        if outcome.value is None:
            trial.set_user_attr("error", f"{spec.metric} was never logged")
            warn(f"trial {trial.number}: {spec.metric} was never logged")
            return float("nan")
        info(f"trial {trial.number}: {spec.metric} {outcome.value:.4f} ({shown})")
        return outcome.value

    return objective


def optimize_until(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    total: int,
    lock: Any = None,
    on_trial: Callable[[], None] | None = None,
) -> None:
    """Run trials one at a time until the study counts ``total``.

    With a ``lock`` shared by local workers, the count and the creation of the next trial
    happen under it, so N workers never overshoot the total.
    """
    while True:
        held = lock.acquire() if lock is not None else False
        if counted_trials(study) >= total:
            if held:
                lock.release()
            return
        state = {"held": held}
        try:
            study.optimize(_gate(objective, lock, state), n_trials=1, gc_after_trial=True)
        finally:
            if state["held"]:
                lock.release()
        if on_trial is not None:
            on_trial()


def _gate(
    objective: Callable[[optuna.Trial], float], lock: Any, state: dict[str, bool]
) -> Callable[[optuna.Trial], float]:
    def gated(trial: optuna.Trial) -> float:
        # The trial now exists in the storage: the next worker may count and ask.
        if state["held"]:
            lock.release()
            state["held"] = False
        return objective(trial)

    return gated


def run_worker(plan: SweepPlan, lock: Any = None, quiet: bool = False) -> None:
    """Run trials of ``plan``'s study in this process until the study holds the total."""
    from cmi_cli.console import setup_logging

    if plan.worker:
        setup_logging(quiet=quiet)
        _quiet_optuna()
    study = load_or_create_study(plan)
    optimize_until(study, make_objective(plan), plan.n_trials, lock=lock)


def _spawned_worker(plan: SweepPlan, lock: Any, quiet: bool, threads: int) -> None:
    import sys

    import torch

    torch.set_num_threads(threads)
    try:
        with interruptible():
            run_worker(plan, lock=lock, quiet=quiet)
    except SweepInterrupted as exc:
        err_console().print(f"worker {plan.worker}: interrupted ({exc}), its trial marked failed")
        sys.exit(exc.exit_code)
    except CmiError as exc:
        err_console().print(f"[bold red]error:[/bold red] worker {plan.worker}: {exc.one_line()}")
        sys.exit(exc.exit_code)


def _quiet_optuna() -> None:
    import optuna

    if not is_verbose():
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_optuna_sweep(
    spec: SweepSpec,
    project_root: Path | None = None,
    *,
    overrides: Sequence[str] = (),
    n_trials: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    sweep_dir: Path | None = None,
    seed: int | None = None,
    show_progress: bool = True,
    resume: bool = False,
) -> SweepResult:
    """Run (or continue) an Optuna study of ``spec`` and write its report.

    Args:
        spec: The parsed sweep spec.
        project_root: The project (data, configs); the current directory when None.
        overrides: Fixed ``cmi train`` overrides applied to every trial (``debug=tiny``).
        n_trials: Trials the study should hold when done (a resumed study adds the rest).
        workers: Local processes running trials in parallel.
        storage: An RDB URL; default SQLite ``study.db`` in the sweep folder.
        study_name: Default: the spec's name (its file name).
        sweep_dir: Default ``sweeps/<study_name>`` in the project.
        seed: Sampler seed (worker i uses seed + i).
        show_progress: Show a progress bar of the study's trials.
        resume: Continue an existing study only (an error when there is none).

    Returns:
        The trials, the best one, and the report files.

    Raises:
        ConfigError: A parameter key or value that ``cmi train`` rejects, or a bad storage.
        UsageError: A fixed override that clashes with a searched parameter, or ``resume``
            without a study of that name.
        SweepInterrupted: SIGINT or SIGTERM stopped it (the running trials are marked failed).
    """
    from cmi_cli.tuning.trial import check_fixed_overrides, check_spec_keys

    root = Path(project_root or Path.cwd()).resolve()
    name = study_name or spec.name or "sweep"
    folder = Path(sweep_dir) if sweep_dir is not None else root / "sweeps" / name
    folder = (root / folder).resolve() if not folder.is_absolute() else folder
    total = n_trials or default_trials(spec)
    if spec.method == "grid" and total > grid_size(spec):
        info(f"the grid has {grid_size(spec)} points: running {grid_size(spec)} trials")
        total = grid_size(spec)
    fixed = list(overrides)
    check_fixed_overrides(spec, fixed)
    check_spec_keys(spec, fixed, root)
    folder.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(folder / 'study.db').as_posix()}"
    plan = SweepPlan(spec, root, fixed, url, name, folder, total, seed)
    _quiet_optuna()
    if resume:
        _require_study(url, name)
    study = load_or_create_study(plan)
    before = counted_trials(study)
    if seed is not None and before:
        # A resumed study must not replay the draws its first run made.
        plan.seed = seed + before
        study.sampler = make_sampler(spec, plan.seed)
    if before >= total:
        info(f"study '{name}' already holds {before} trials (ask for more with --trials)")
    else:
        info(f"study '{name}': {before} trials so far, running {total - before} more in {folder}")
        show = show_progress and not is_quiet()
        with interruptible(), _progress(show, total, before) as advance:
            if workers <= 1:
                optimize_until(
                    study,
                    make_objective(plan),
                    total,
                    on_trial=lambda: advance(counted_trials(study)),
                )
            else:
                _run_processes(plan, workers, lambda: advance(counted_trials(study)))
    from cmi_cli.tuning.finish import finish_sweep

    return finish_sweep(
        rows=study_rows(study),
        spec=spec,
        study_name=name,
        sweep_dir=folder,
        storage=url,
        project_root=root,
    )


def _require_study(url: str, name: str) -> None:
    import optuna

    from cmi_cli.errors import UsageError
    from cmi_cli.tuning.optuna_study import open_storage

    if name not in optuna.study.get_all_study_names(storage=open_storage(url)):
        raise UsageError(
            f"--resume: there is no study '{name}' to continue",
            hint="Check --study-name and --storage, or drop --resume to start it",
        )


def _run_processes(plan: SweepPlan, workers: int, poll: Callable[[], None]) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    lock = ctx.Lock()
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = []
    for i in range(workers):
        worker_seed = None if plan.seed is None else plan.seed + i
        worker_plan = SweepPlan(**{**plan.__dict__, "worker": i + 1, "seed": worker_seed})
        proc = ctx.Process(
            target=_spawned_worker,
            args=(worker_plan, lock, is_quiet(), threads),
            name=f"cmi-sweep-worker-{i + 1}",
        )
        proc.start()
        procs.append(proc)
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(1.0)
            poll()
    except BaseException:
        # Ctrl-C reaches the workers too (one process group); SIGTERM or an error here does
        # not: pass it on so each marks its trial failed before it exits.
        for p in procs:
            if p.is_alive():
                p.terminate()
        raise
    finally:
        for p in procs:
            p.join()
    poll()
    failed = [p for p in procs if p.exitcode != 0]
    if failed:
        codes = ", ".join(f"{p.name} exit {p.exitcode}" for p in failed)
        raise CmiError(f"{len(failed)} of {workers} sweep workers failed ({codes})")


def _progress(show: bool, total: int, done: int) -> Any:
    from contextlib import contextmanager

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    if not show:
        return nullcontext(lambda _n: None)

    @contextmanager
    def bar() -> Any:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console(),
            transient=False,
        ) as progress:
            task = progress.add_task("trials", total=total, completed=done)
            yield lambda n: progress.update(task, completed=min(n, total))

    return bar()
