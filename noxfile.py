"""Developer and CI sessions: `nox -l` lists them, `nox -s NAME` runs one.

``tests``, ``lint``, ``typecheck``, ``docs`` and ``coverage`` build their own virtualenvs;
``loadtest`` runs in the current environment (``venv_backend="none"``: it needs the whole
project, torch included, to export a model): install it first with ``pip install -e ".[dev]"``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nox

ROOT = Path(__file__).parent
RESULTS = ROOT / "results"
# The interpreter matrix: the whole suite on PRIMARY, the fast tests (not `slow`) on the others.
# Every one is listed whether or not it is installed: nox skips a missing interpreter locally and,
# with CI=true, fails on it (nox's --error-on-missing-interpreters default in CI), so a CI run can
# never drop one silently. NOX_PYTHONS="3.11 3.12" narrows it. These are every Python that
# pyproject.toml supports (>=3.11: onnxruntime's floor, 1.24.1, has no 3.10 wheels).
PRIMARY = "3.11"
PYTHONS = os.environ.get("NOX_PYTHONS", "3.11 3.12 3.13").split()
# torch first and pinned, so the project's open `torch>=2.2` range cannot pull a multi-GB CUDA
# build by accident; TORCH_SPEC picks other versions, TORCH_INDEX_URL a wheel index (e.g.
# https://download.pytorch.org/whl/cpu). torchvision comes with it: timm needs it.
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.14.1 torchvision==0.29.1").split()
TORCH_INDEX_URL = os.environ.get("TORCH_INDEX_URL", "")
# The issue asks for at least 85%; measured on the whole suite, never lowered to pass.
COVERAGE_MIN = "85"

# uv creates and fills the session virtualenvs (much faster, and its cache shares the large
# wheels such as torch's between interpreters); plain venv + pip where uv is not installed.
nox.options.default_venv_backend = "uv|venv"
nox.options.sessions = ["lint", "typecheck", "tests"]


# --- helpers ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the server at {url} was not ready after {timeout:.0f} s")


class _Server:
    """`cmi serve MODEL` on a free local port for the duration of a `with` block."""

    def __init__(self, session: nox.Session, model: Path, log: Path, *args: str) -> None:
        self.session, self.model, self.log, self.args = session, model, log, args
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Server:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        log_dir = self.log.parent / "predictions"
        cmd = [sys.executable, "-m", "cmi_cli", "serve", str(self.model), "--port", str(port),
               "--no-access-log", "--log-dir", str(log_dir), *self.args]  # fmt: skip
        self.session.log(" ".join(cmd))
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _wait_ready(self.url, self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


def _install_project(session: nox.Session, extras: str = "dev") -> None:
    index = ["--extra-index-url", TORCH_INDEX_URL] if TORCH_INDEX_URL else []
    session.install(*TORCH_SPEC, *index)
    # pip too: uv makes environments without it, and the packaging tests run `python -m pip`.
    session.install("-e", f".[{extras}]", "pip")


# --- sessions --------------------------------------------------------------------------------


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """pytest: the whole suite on PRIMARY, `-m "not slow"` elsewhere; `-- ARGS` replaces that."""
    _install_project(session)
    default = [] if session.python == PRIMARY else ["-m", "not slow"]
    session.run("pytest", *(session.posargs or default))


_REPORT_VERSIONS = (
    "from importlib.metadata import version as v; "
    "print(*(f'{n}=={v(n)}' for n in ('torch', 'numpy', 'lightning', 'typer', 'fastapi', "
    "'onnxruntime', 'evidently', 'pandas', 'dvc', 'optuna')))"
)


@nox.session(python=PRIMARY, venv_backend="uv")
def lowest(session: nox.Session) -> None:
    """The fast tests with every direct dependency at its pyproject.toml lower bound.

    uv resolves `--resolution lowest-direct`, so each range's floor is installed and tested: a
    floor that fails here is raised in pyproject.toml, never left as a promise.
    """
    # The runtime floors first; then the test tools at their current releases (their own
    # floors are not what users run). uv keeps what is installed when it already satisfies.
    session.install("--resolution", "lowest-direct", "-e", ".")
    # pip too: uv makes venvs without it, and the packaging test builds the wheel with `pip wheel`.
    session.install("-e", ".[dev]", "pip")
    session.run("python", "-c", _REPORT_VERSIONS)
    # The generated CLI reference is text rendered by the installed Typer/Click: it is checked
    # against the versions CI pins, not the floors.
    stale_ok = "--deselect=tests/delivery/test_reference_docs.py::test_generated_page_is_current"
    session.run("pytest", *(session.posargs or ["-m", "not slow", "-q", stale_ok]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and every pre-commit hook."""
    # the project itself: the mypy hook runs from this environment
    _install_project(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("pre-commit", "run", "--all-files", "--show-diff-on-failure")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the package (configuration in pyproject.toml)."""
    _install_project(session)
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Check that the generated reference pages are current, then build the site strictly."""
    _install_project(session, "dev,docs")
    session.run("python", "-m", "cmi_cli.cli.docs_gen", "--check")
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def coverage(session: nox.Session) -> None:
    """The whole test suite under coverage; fails under COVERAGE_MIN percent."""
    _install_project(session)
    session.run(
        "pytest", "--cov=cmi_cli", "--cov-report=term", "--cov-report=xml",
        f"--cov-fail-under={COVERAGE_MIN}", *session.posargs,
    )  # fmt: skip


@nox.session(venv_backend="none")
def loadtest(session: nox.Session) -> None:
    """Start `cmi serve`, run Locust headless against it, write CSV and HTML results.

    nox -s loadtest [-- MODEL.onnx]. Without a model, one of the default architecture is
    exported first. LOADTEST_USERS (10), LOADTEST_SPAWN_RATE (5), LOADTEST_SECONDS (20) set
    the load. Results go to results/loadtest/. Fails if any request failed.
    """
    out = RESULTS / "loadtest"
    out.mkdir(parents=True, exist_ok=True)
    if session.posargs:
        model = Path(session.posargs[0])
    else:
        model = out / "model.onnx"
        if not model.is_file():
            session.run(sys.executable, str(ROOT / "benchmarks" / "serve.py"), "make-model",
                        str(model), "--image-size", "128")  # fmt: skip
    users = os.environ.get("LOADTEST_USERS", "10")
    rate = os.environ.get("LOADTEST_SPAWN_RATE", "5")
    seconds = os.environ.get("LOADTEST_SECONDS", "20")
    with _Server(session, model, out / "server.log") as server:
        session.run(
            sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"),
            "--headless", "--users", users, "--spawn-rate", rate, "--run-time", f"{seconds}s",
            "--host", server.url, "--csv", str(out / "locust"), "--html", str(out / "locust.html"),
            "--only-summary", "--exit-code-on-error", "1", "--stop-timeout", "10",
        )  # fmt: skip
    session.log(f"results in {out}")
