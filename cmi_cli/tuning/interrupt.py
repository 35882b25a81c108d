"""Interrupted sweep trials: mark them failed when the signal comes, or at the next start.

A trial left RUNNING would never be redone (Optuna skips running trials) and never counted.
Three ways a trial is interrupted, and what catches each:

- Ctrl-C (SIGINT) or SIGTERM (``timeout``, Cloud Run, Kubernetes): :func:`interruptible` turns
  the signal into :class:`SweepInterrupted`; the objective marks its trial FAILED with the
  user attribute ``interrupted`` and the process exits 130 (SIGINT) or 143 (SIGTERM).
- A killed worker (SIGKILL, out of memory) on this machine: every trial records the host and
  pid of its worker; :func:`fail_orphaned_trials` fails RUNNING trials whose worker process
  is gone, each time a sweep starts (so at the next rerun or ``--resume``).
- A worker on another machine that vanished: Optuna's heartbeat (every
  :data:`HEARTBEAT_INTERVAL` s) goes stale, and after :data:`GRACE_PERIOD` s the next trial any
  worker starts marks it FAILED.

Trials failed this way carry ``interrupted`` and no ``error``; they do not count toward
``--trials``, so a rerun redoes them.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

HEARTBEAT_INTERVAL = 30
"""Seconds between a running trial's heartbeats in the study storage."""
GRACE_PERIOD = 120
"""Seconds without a heartbeat after which another worker fails a trial."""


class SweepInterrupted(BaseException):
    """A signal stopped the sweep; ``exit_code`` is 128 + the signal's number.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the way (training,
    Optuna) mistakes it for a failed trial or swallows it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(signal.Signals(signum).name)


_received: list[int] = []


def _raise(signum: int, _frame: FrameType | None) -> None:
    first = not _received
    _received.append(signum)
    # A second signal (Ctrl-C twice, or SIGTERM passed on to a worker that already saw
    # Ctrl-C) must not cut short the clean-up that marks the trial failed.
    if first:
        raise SweepInterrupted(signum)


@contextmanager
def interruptible() -> Iterator[None]:
    """Raise :class:`SweepInterrupted` on SIGINT and SIGTERM while the block runs.

    Lightning keeps an existing SIGTERM handler and calls it after its own, so the exception
    also reaches a trial in the middle of training.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # a background job: leave it so
        wanted = [signal.SIGTERM]
    else:
        wanted = [signal.SIGINT, signal.SIGTERM]
    try:
        before = {s: signal.signal(s, _raise) for s in wanted}
    except ValueError:  # not the main thread: signals cannot be caught here
        yield
        return
    _received.clear()
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def interruption(exc: BaseException) -> SweepInterrupted | None:
    """Return what ``exc``, escaping a trial, means as an interruption (None: it is not one).

    Training may turn the signal into its own exit (``TrainingInterrupted`` from cmi's graceful
    stop; Lightning: ``sys.exit(1)`` after Ctrl-C, a ``SystemExit`` after SIGTERM); the signal
    we saw decides the exit code.
    """
    if isinstance(exc, SweepInterrupted):
        return exc
    from cmi_cli.training.interrupt import TrainingInterrupted

    if isinstance(exc, TrainingInterrupted):
        # Training caught the signal itself (it saved a resumable checkpoint first).
        return SweepInterrupted(exc.exit_code - 128)
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        if _received:
            return SweepInterrupted(_received[-1])
        return SweepInterrupted(signal.SIGINT if isinstance(exc, KeyboardInterrupt) else 15)
    return None


def mark_worker(trial: optuna.Trial) -> None:
    """Record which process runs ``trial``, so a later start can tell if it died."""
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})


def fail_interrupted(trial: optuna.Trial, why: str) -> None:
    """Mark a running trial FAILED as interrupted (not counted: a rerun redoes it)."""
    from optuna.trial import TrialState

    trial.set_user_attr("interrupted", why)
    trial.study.tell(trial, state=TrialState.FAIL)


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose worker is gone; return their numbers.

    A worker on this host is gone when its pid no longer exists; a worker elsewhere, when
    its heartbeat is older than :data:`GRACE_PERIOD` (Optuna's own check).
    """
    import optuna
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed: list[int] = []
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker: Any = t.user_attrs.get("worker") or {}
        if worker.get("host") != host or _alive(int(worker.get("pid", 0))):
            continue
        why = f"worker pid {worker.get('pid')} on {host} ended while the trial ran"
        try:
            storage.set_trial_user_attr(t._trial_id, "interrupted", why)
            if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                failed.append(t.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker got there first
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return sorted([*failed, *(before - after)])


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # unknown: leave it to the heartbeat
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
