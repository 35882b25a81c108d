"""Processes that open one new study storage at the same moment all get it.

Optuna creates the tables and stamps the schema version on first use; processes that start
together (sweep workers, or a monitor reading the study) race to do it, and the losers see a
unique-constraint error for the version row that the winner has just written.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from cmi_cli.errors import ConfigError

PROCESSES = 6
ROUNDS = 4


def _open(url: str, barrier: mp.synchronize.Barrier, out: mp.Queue) -> None:  # type: ignore[name-defined]
    from cmi_cli.tuning.optuna_study import open_storage

    barrier.wait()
    try:
        open_storage(url)
        out.put("ok")
    except ConfigError as exc:
        out.put(str(exc))


@pytest.mark.slow
def test_processes_opening_a_new_sqlite_storage_together_all_succeed(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    failures: list[str] = []
    for n in range(ROUNDS):
        url = f"sqlite:///{(tmp_path / f'study{n}.db').as_posix()}"
        barrier, out = ctx.Barrier(PROCESSES), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(url, barrier, out)) for _ in range(PROCESSES)]
        for p in procs:
            p.start()
        results = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        failures += [r for r in results if r != "ok"]
    assert not failures, failures


def test_a_sqlite_version_row_conflict_counts_as_the_creation_race() -> None:
    from sqlalchemy.exc import IntegrityError

    from cmi_cli.tuning.optuna_study import _is_creation_race

    exc = IntegrityError(
        "INSERT INTO alembic_version (version_num) VALUES (?)",
        None,
        Exception("UNIQUE constraint failed: alembic_version.version_num"),
    )
    assert _is_creation_race(exc)
    assert not _is_creation_race(ValueError("no such table: studies"))
