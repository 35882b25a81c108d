"""`cmi sweep` on a real PostgreSQL server and on SQLite: shared studies, drivers, interruptions.

Each `cmi sweep` here is a real process; a "long" trial is the tiny spec with many epochs, so
a signal lands while it trains.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from _scale_servers import Postgres

from cmi_cli.tuning.optuna_study import open_storage

LONG = "trainer.max_epochs=500"


@pytest.fixture
def project(tmp_path: Path, tiny_sample_master: Path) -> Path:
    shutil.copytree(tiny_sample_master, tmp_path / "data" / "foodseg103")
    return tmp_path


def _env() -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "disabled", "COLUMNS": "200"}
    env.pop("CMI_RUN_NAME", None)
    env.pop("CMI_SWEEP_STORAGE", None)
    return env


def _restore_sigint() -> None:
    # A shell's background jobs ignore SIGINT; a terminal's foreground command does not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sweep(root: Path, *args: str, log: str = "sweep") -> subprocess.Popen[bytes]:
    """Start `cmi sweep tiny ARGS` in ``root``; its output goes to ``root/<log>.log``."""
    out = (root / f"{log}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "cmi_cli", "sweep", "tiny", *args],
        cwd=root,
        env=_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=_restore_sigint,
    )


def finish(
    proc: subprocess.Popen[bytes], root: Path, log: str = "sweep", timeout: float = 600
) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(
            f"cmi sweep did not finish in {timeout} s:\n{(root / f'{log}.log').read_text()}"
        )


def trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()


def wait_until(
    cond: Callable[[], bool], proc: subprocess.Popen[bytes], root: Path, log: str
) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"cmi sweep ended early ({proc.returncode}):\n{(root / f'{log}.log').read_text()}"
            )
        try:
            if cond():
                return
        except Exception:  # the study is not created yet
            pass
        time.sleep(0.3)
    pytest.fail("timed out waiting for a running trial")


def training(url: str, name: str, pid: int) -> Callable[[], bool]:
    """True once process ``pid`` has a RUNNING trial whose run folder exists (it trains)."""

    def check() -> bool:
        for t in trials(url, name):
            worker = t.user_attrs.get("worker", {})
            run_dir = t.user_attrs.get("run_dir")
            if (
                t.state.name == "RUNNING"
                and worker.get("pid") == pid
                and run_dir
                and (Path(run_dir) / "config.yaml").exists()
            ):
                return True
        return False

    return check


def sqlite_url(root: Path, name: str) -> str:
    return f"sqlite:///{(root / 'sweeps' / name / 'study.db').as_posix()}"


# --- interruption (issue 14, fault 4) ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_marks_the_running_trial_failed_and_resume_redoes_it(
    project: Path, sig: signal.Signals, code: int
) -> None:
    name = "sig"
    url = sqlite_url(project, name)
    proc = sweep(project, "-n", "1", "--study-name", name, LONG)
    wait_until(training(url, name, proc.pid), proc, project, "sweep")
    proc.send_signal(sig)
    assert finish(proc, project, timeout=60) == code
    [trial] = trials(url, name)
    assert trial.state.name == "FAIL"
    assert sig.name in trial.user_attrs["interrupted"]
    log = (project / "sweep.log").read_text()
    assert "Traceback" not in log
    assert "--resume" in log
    if sig == signal.SIGINT:
        return  # the same code path from here on: one resume is enough

    again = sweep(project, "-n", "1", "--study-name", name, "--resume", log="resume")
    assert finish(again, project, "resume") == 0, (project / "resume.log").read_text()
    states = [t.state.name for t in trials(url, name)]
    assert states == ["FAIL", "COMPLETE"], "the interrupted trial is redone, not counted"


@pytest.mark.slow
def test_killed_workers_trial_is_failed_at_the_next_resume(project: Path) -> None:
    name = "kill"
    url = sqlite_url(project, name)
    _kill_then_resume(project, url, name, [])


def _kill_then_resume(root: Path, url: str, name: str, storage: list[str]) -> None:
    proc = sweep(root, "-n", "1", "--study-name", name, *storage, LONG, log="killed")
    wait_until(training(url, name, proc.pid), proc, root, "killed")
    proc.kill()
    proc.wait()
    [left] = trials(url, name)
    assert left.state.name == "RUNNING"  # nothing can run in a SIGKILLed process

    again = sweep(root, "-n", "1", "--study-name", name, *storage, "--resume", log="resume")
    assert finish(again, root, "resume") == 0, (root / "resume.log").read_text()
    after = trials(url, name)
    assert [t.state.name for t in after] == ["FAIL", "COMPLETE"]
    assert f"pid {proc.pid}" in after[0].user_attrs["interrupted"]
    assert "marked failed" in (root / "resume.log").read_text()


def test_resume_without_a_study_is_one_line(project: Path) -> None:
    proc = sweep(project, "--study-name", "nothing", "--resume", log="none")
    assert finish(proc, project, "none", timeout=120) == 2
    text = (project / "none.log").read_text()
    assert "no study 'nothing'" in text
    assert "Traceback" not in text


# --- PostgreSQL (issues 13 and 17.1) ------------------------------------------------------------


@pytest.mark.slow
def test_two_workers_share_one_postgres_study_and_resume_continues_it(
    project: Path, postgres: Postgres
) -> None:
    url = postgres.createdb("shared")  # postgresql://cmi:secret@127.0.0.1:PORT/shared
    assert url.startswith("postgresql://cmi:secret@127.0.0.1:")
    name = "team"
    # Two machines' worth of workers: separate processes, one study, as docs/sweeps.md shows.
    started = time.monotonic()
    a = sweep(project, "-n", "2", "--study-name", name, "--storage", url, "--seed", "1", log="a")
    b = sweep(project, "-n", "2", "--study-name", name, "--storage", url, "--seed", "2", log="b")
    assert finish(a, project, "a") == 0, (project / "a.log").read_text()
    assert finish(b, project, "b") == 0, (project / "b.log").read_text()
    done = trials(url, name)
    numbers = [t.number for t in done]
    assert len(numbers) == len(set(numbers)), "no trial number repeats"
    # Separate machines may overshoot the total by a trial each (docs/sweeps.md).
    assert 2 <= len(done) <= 4
    assert all(t.state.name == "COMPLETE" for t in done)
    pids = {t.user_attrs["worker"]["pid"] for t in done}
    assert pids <= {a.pid, b.pid}
    assert len(done) == 2 or pids == {a.pid, b.pid}, "both workers' trials land in the study"

    more = sweep(
        project,
        "-n",
        str(len(done) + 1),
        "--study-name",
        name,
        "--storage",
        url,
        "--resume",
        log="more",
    )
    assert finish(more, project, "more") == 0, (project / "more.log").read_text()
    after = trials(url, name)
    assert [t.number for t in after[: len(done)]] == numbers
    assert len(after) == len(done) + 1
    assert after[-1].state.name == "COMPLETE"
    print(f"two workers + resume on PostgreSQL: {time.monotonic() - started:.1f} s")


@pytest.mark.slow
def test_killed_worker_on_postgres_is_failed_at_resume(project: Path, postgres: Postgres) -> None:
    url = postgres.createdb("killed")
    _kill_then_resume(project, url, "pgkill", ["--storage", url])


@pytest.mark.slow
def test_sigterm_on_postgres_fails_the_trial_at_once(project: Path, postgres: Postgres) -> None:
    url = postgres.createdb("sigterm")
    proc = sweep(project, "-n", "1", "--study-name", "pgterm", "--storage", url, LONG)
    wait_until(training(url, "pgterm", proc.pid), proc, project, "sweep")
    proc.send_signal(signal.SIGTERM)
    assert finish(proc, project, timeout=60) == 143
    [trial] = trials(url, "pgterm")
    assert trial.state.name == "FAIL"
    assert "SIGTERM" in trial.user_attrs["interrupted"]


def test_documented_postgres_url_opens_with_the_extras_driver(postgres: Postgres) -> None:
    url = postgres.createdb("plain")
    storage = open_storage(url)  # the bare postgresql:// form of --help and the docs
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(study.trials) == 2
    explicit = url.replace("postgresql://", "postgresql+psycopg://")
    assert len(optuna.load_study(study_name="s", storage=open_storage(explicit)).trials) == 2


def test_missing_driver_is_one_line_naming_the_extra(project: Path) -> None:
    url = "postgresql+pg8000://cmi:secret@127.0.0.1:1/db"  # a driver no extra installs
    proc = subprocess.run(
        [sys.executable, "-m", "cmi_cli", "sweep", "tiny", "--storage", url],
        cwd=project,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) <= 2, proc.stderr
    assert "pg8000" in proc.stderr
    assert "cmi-cli[postgres]" in proc.stderr
    assert "secret" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bare_postgres_urls_are_pinned_to_the_extras_driver() -> None:
    import tomllib

    from cmi_cli.tuning.optuna_study import POSTGRES_DRIVER, storage_url

    assert storage_url("postgresql://u:p@h/db") == f"postgresql+{POSTGRES_DRIVER}://u:p@h/db"
    assert storage_url("postgres://u:p@h/db") == f"postgresql+{POSTGRES_DRIVER}://u:p@h/db"
    for explicit in ("postgresql+psycopg2://u:p@h/db", "sqlite:///x.db"):
        assert storage_url(explicit) == explicit
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert any(req.startswith(f"{POSTGRES_DRIVER}[binary]") for req in extras["postgres"])
    assert any(req.startswith("google-cloud-storage") for req in extras["gcp"])
    assert any(req.startswith("dvc-gs") for req in extras["gcp"])
