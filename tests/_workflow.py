"""Run a GitHub Actions job's `run:` steps here, so a broken step fails in our tests first.

Only what a local run can honour is done: `uses:` steps (checkout, caches, cloud auth) are left
to GitHub, and expressions `${{ a || 'literal' }}` take their quoted literal, as they do on a
runner where the event gives no value.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_EXPR = re.compile(r"\$\{\{(.*?)\}\}")


def _literal(expression: str) -> str:
    for operand in expression.split("||"):
        operand = operand.strip()
        if operand[:1] == operand[-1:] == "'" and len(operand) >= 2:
            return operand[1:-1]
    raise ValueError(f"cannot evaluate ${{{{{expression}}}}} outside GitHub")


def evaluate(text: str) -> str:
    """Replace each `${{ ... }}` by the quoted literal it falls back to."""
    return _EXPR.sub(lambda m: _literal(m[1]), text)


@dataclass
class StepRun:
    name: str
    returncode: int
    output: str


def run_job(
    workflow: Path,
    job: str,
    cwd: Path,
    env: dict[str, str],
    skip: set[str] = frozenset(),  # type: ignore[assignment]
    timeout: float = 900,
) -> list[StepRun]:
    """Run the `run:` steps of ``job`` in ``cwd``; stop at the first failure.

    Args:
        workflow: The workflow file.
        job: The job id.
        cwd: Where the steps run (the job's working directory).
        env: Base environment; the workflow's and job's `env:` and each step's are added.
        skip: Step ids not to run here (say why at the call).
        timeout: Seconds per step.
    """
    flow: dict[str, Any] = yaml.safe_load(workflow.read_text(encoding="utf-8"))
    spec = flow["jobs"][job]
    base = {**env, **{k: evaluate(str(v)) for k, v in (flow.get("env") or {}).items()}}
    base.update({k: evaluate(str(v)) for k, v in (spec.get("env") or {}).items()})
    results: list[StepRun] = []
    for step in spec["steps"]:
        if "run" not in step or step.get("id") in skip:
            continue
        step_env = {**base, **{k: evaluate(str(v)) for k, v in (step.get("env") or {}).items()}}
        done = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", evaluate(step["run"])],
            cwd=cwd,
            env={**os.environ, **step_env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        results.append(
            StepRun(step.get("name", step["run"][:40]), done.returncode, done.stdout + done.stderr)
        )
        if done.returncode:
            break
    return results
