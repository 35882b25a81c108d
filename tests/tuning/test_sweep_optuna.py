"""Optuna sweeps end to end on tiny settings: run folders, resume, best.yaml, plots, workers."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.config import compose_train_config, config_to_yaml
from cmi_cli.tuning.optuna_backend import run_optuna_sweep
from cmi_cli.tuning.optuna_study import open_storage
from cmi_cli.tuning.pruning import OptunaPruning
from cmi_cli.tuning.spec import load_spec
from cmi_cli.tuning.trial import run_trial

PNG = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def _project(tmp_path_factory: pytest.TempPathFactory, master: Path, name: str) -> Path:
    root = tmp_path_factory.mktemp(name)
    shutil.copytree(master, root / "data" / "foodseg103")
    return root


def _trials(sweep_dir: Path, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(f"sqlite:///{(sweep_dir / 'study.db').as_posix()}")
    return optuna.load_study(study_name=name, storage=storage).get_trials()


@pytest.fixture(scope="module")
def swept(
    tmp_path_factory: pytest.TempPathFactory, tiny_sample_master: Path
) -> Iterator[SimpleNamespace]:
    """The packaged tiny spec run for 2 trials, then rerun asking for 3 (a resume)."""
    root = _project(tmp_path_factory, tiny_sample_master, "sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("WANDB_MODE", "disabled")
        mp.delenv("CMI_RUN_NAME", raising=False)
        spec = load_spec("tiny", root)
        first = run_optuna_sweep(spec, root, n_trials=2, seed=0, show_progress=False)
        before = _trials(first.sweep_dir)
        second = run_optuna_sweep(spec, root, n_trials=3, seed=0, show_progress=False)
        yield SimpleNamespace(root=root, first=first, before=before, second=second)


def test_resume_adds_trials_and_keeps_the_first_ones(swept: SimpleNamespace) -> None:
    assert len(swept.first.rows) == 2
    after = _trials(swept.second.sweep_dir)
    assert [t.number for t in after] == [0, 1, 2]
    for old, new in zip(swept.before, after[:2], strict=True):
        assert (new.params, new.value, new.state) == (old.params, old.value, old.state)
        assert new.datetime_complete == old.datetime_complete
    # The resumed sampler does not replay the first draws.
    assert after[2].params != after[0].params


def test_three_trial_sweep_leaves_runs_table_and_plots(swept: SimpleNamespace) -> None:
    result = swept.second
    sweep_dir = swept.root / "sweeps" / "tiny"
    assert result.sweep_dir == sweep_dir
    assert (sweep_dir / "study.db").is_file()
    assert [r.state for r in result.rows] == ["complete"] * 3
    runs = sorted(p.name for p in (sweep_dir / "runs").iterdir())
    assert runs == ["tiny-t0", "tiny-t1", "tiny-t2"]
    for run in runs:
        assert (sweep_dir / "runs" / run / "checkpoints" / "best.ckpt").is_file()
    lines = (sweep_dir / "trials.csv").read_text().splitlines()
    assert lines[0].startswith("number,state,val/miou,")
    assert len(lines) == 4
    for png in ("history.png", "importances.png"):
        assert (sweep_dir / png).read_bytes()[:8] == PNG
    values = [r.value for r in result.rows]
    assert result.best is not None
    assert result.best.value == max(values)
    for row in result.rows:
        assert 1e-3 <= row.values["optim.lr"] <= 3e-2
        assert row.values["model.params.width"] in (4, 8)


def test_best_file_reproduces_the_best_trials_config(swept: SimpleNamespace) -> None:
    best = swept.second.best
    path = swept.second.files["best"]
    assert path == swept.root / "sweeps" / "tiny" / "best.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["debug"] == "tiny"
    assert data["optim"]["lr"] == best.values["optim.lr"]
    cfg = compose_train_config(config_file=path, project_root=swept.root)
    composed = yaml.safe_load(config_to_yaml(cfg))
    trained = yaml.safe_load((Path(best.run_dir) / "config.yaml").read_text())
    composed.pop("run")
    trained.pop("run")
    assert composed == trained


def test_cli_rerun_reports_the_finished_study(
    swept: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(swept.root)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    result = runner.invoke(app, ["sweep", "tiny", "--trials", "3"])
    assert result.exit_code == 0, result.output
    assert "already holds 3 trials" in result.output
    assert "Trials (maximize val/miou)" in result.output
    assert f"best: trial {swept.second.best.number}" in result.output
    assert len(_trials(swept.second.sweep_dir)) == 3


def test_cli_malformed_spec_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "method: random\nmetric: {name: val/miou}\nparameters: {optim.lr: {min: 1, max: 0.1}}\n"
    )
    result = runner.invoke(app, ["sweep", str(spec), "debug=tiny"])
    assert result.exit_code == 2
    assert "parameters.optim.lr: min 1 is greater than max 0.1" in result.output
    assert not (tmp_path / "sweeps").exists()


class _FakeTrainer(SimpleNamespace):
    sanity_checking = False
    is_global_zero = True


def test_pruning_callback_reports_and_prunes() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(0.5))
    trial = study.ask()
    callback = OptunaPruning(trial, "val/miou")
    module: Any = None
    first: Any = _FakeTrainer(callback_metrics={"val/miou": 0.7}, current_epoch=0)
    callback.on_validation_end(first, module)
    second: Any = _FakeTrainer(callback_metrics={"val/miou": 0.2}, current_epoch=1)
    with pytest.raises(optuna.TrialPruned, match="after epoch 2"):
        callback.on_validation_end(second, module)
    assert study.trials[0].intermediate_values == {1: 0.7, 2: 0.2}


def test_pruned_trial_stops_a_real_lightning_run(tiny_project: Path) -> None:
    spec = load_spec("tiny", tiny_project)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(1.5))
    runs = tiny_project / "sweeps" / "p" / "runs"

    def objective(trial: optuna.Trial) -> float:
        outcome = run_trial(
            spec,
            {"optim.lr": 0.01, "model.params.width": 4},
            fixed=["trainer.max_epochs=3"],
            project_root=tiny_project,
            run_name="p-t0",
            runs_dir=runs,
            group="p",
            extra_callbacks=[OptunaPruning(trial, "val/miou")],
        )
        return outcome.value or 0.0

    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]  # stopped after the first epoch
    assert (runs / "p-t0" / "config.yaml").is_file()


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_sample_master: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = _project(tmp_path_factory, tiny_sample_master, "parallel")
    monkeypatch.chdir(root)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec = load_spec("tiny", root)
    result = run_optuna_sweep(
        spec, root, n_trials=4, workers=2, study_name="par", show_progress=False
    )
    trials = _trials(result.sweep_dir, "par")
    assert len(trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    runs = {Path(t.user_attrs["run_dir"]).name for t in trials}
    assert runs == {f"par-t{i}" for i in range(4)}
    for name in runs:
        assert (result.sweep_dir / "runs" / name / "metrics.json").is_file()
    assert (result.sweep_dir / "best.yaml").is_file()
