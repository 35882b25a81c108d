"""Real servers for the scale-path tests: PostgreSQL, a GCS emulator, Prometheus.

Each starts on 127.0.0.1 on a free port with its data in a fresh temporary folder, and stops
when the test session ends. A server that cannot be found skips its tests locally (install it,
see .ci/run) and fails them in CI (``CI=true``), where .ci/run installs every one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def unavailable(reason: str) -> None:
    """Skip the test with ``reason``; in CI, fail it, since CI installs every server."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run this test: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """Return a port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 60
) -> None:
    """Wait until ``port`` accepts connections, or fail with the server's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} in {timeout:.0f} s: {_tail(log)}")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} server exited {proc.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} was not ready in {timeout:.0f} s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate ``proc`` and wait; kill it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- PostgreSQL -------------------------------------------------------------------------------


@dataclass
class Postgres:
    """A running PostgreSQL server with a login role ``cmi`` (password ``secret``)."""

    port: int
    bindir: Path
    socket_dir: Path
    as_postgres: list[str]

    def url(self, database: str) -> str:
        """The storage URL in the form the docs give: ``postgresql://user:pass@host:port/db``."""
        return f"postgresql://cmi:secret@127.0.0.1:{self.port}/{database}"

    def createdb(self, name: str) -> str:
        """Create database ``name`` owned by ``cmi``; return its URL."""
        self.psql(f'CREATE DATABASE "{name}" OWNER cmi')
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser over the local socket; return psql's output."""
        cmd = [
            *self.as_postgres,
            str(self.bindir / "psql"),
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-tAc",
            sql,
        ]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def _postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _version_key(path: str) -> int:
    part = path.split("/")[4]
    return int(part) if part.isdigit() else 0


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """Start PostgreSQL (initdb, pg_ctl) in a temporary folder; scram logins on 127.0.0.1 only.

    PostgreSQL refuses to run as root, so under root (CI) it runs as the ``postgres`` user that
    Debian's package creates.
    """
    bindir = _postgres_bindir()
    if bindir is None:
        unavailable("PostgreSQL is not installed (apt-get install postgresql)")
        raise AssertionError  # unreachable: unavailable() raises
    as_postgres: list[str] = []
    owner = None
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            import pwd

            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = None
        if runuser is None or owner is None:
            unavailable("running as root and there is no 'postgres' user to run PostgreSQL as")
        as_postgres = [str(runuser), "-u", "postgres", "--"]
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as
    # postgres.
    base = Path(tempfile.mkdtemp(prefix="cmi-pg-"))
    data, sockets = base / "data", base / "run"
    sockets.mkdir()
    if owner is not None:
        for path in (base, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()
    log = base / "server.log"
    run = [*as_postgres]
    try:
        subprocess.run(
            [
                *run,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        subprocess.run(
            [
                *run,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ],
            check=True,
            capture_output=True,
        )
        server = Postgres(port, bindir, sockets, as_postgres)
        server.psql("CREATE ROLE cmi LOGIN PASSWORD 'secret'")
        yield server
    finally:
        subprocess.run(
            [*run, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


# --- GCS emulator ------------------------------------------------------------------------------


@dataclass
class GcsEmulator:
    """A running gcp-storage-emulator with bucket ``bucket``."""

    port: int
    bucket: str

    @property
    def host(self) -> str:
        """The value of ``STORAGE_EMULATOR_HOST`` and of DVC's ``endpointurl``."""
        return f"http://127.0.0.1:{self.port}"

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        """Every object of the bucket under ``prefix``, by name (through the storage client)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.host},
        )
        return {
            b.name: b.download_as_bytes()
            for b in client.list_blobs(self.bucket, prefix=prefix or None)
        }


@contextlib.contextmanager
def gcs_emulator(tmp: Path) -> Iterator[GcsEmulator]:
    """Start gcp-storage-emulator (a dev dependency) in memory on 127.0.0.1."""
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    if not exe.exists() or importlib_missing("google.cloud.storage") or importlib_missing("gcsfs"):
        unavailable(
            "the GCS emulator or the [gcp] extra is not installed (pip install -e .[dev,gcp])"
        )
    port = free_port()
    log = tmp / "gcs-emulator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(exe),
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--in-memory",
                "--default-bucket",
                "bucket",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    try:
        wait_for_port(port, proc, "gcp-storage-emulator", log)
        yield GcsEmulator(port, "bucket")
    finally:
        stop(proc)


def importlib_missing(module: str) -> bool:
    """Return True when ``module`` cannot be imported."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True


# --- Prometheus --------------------------------------------------------------------------------


@dataclass
class Prometheus:
    """A running Prometheus server."""

    port: int
    proc: subprocess.Popen[bytes]

    def api(self, path: str) -> dict:
        """GET ``/api/v1/<path>`` and return the JSON ``data``."""
        import json

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}", timeout=5) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]


def prometheus_binary() -> str:
    """Return the ``prometheus`` executable, or skip/fail when it is not installed."""
    exe = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if exe is None:
        unavailable("Prometheus is not installed (apt-get install prometheus)")
        raise AssertionError  # unreachable
    return exe


@contextlib.contextmanager
def prometheus_server(config: Path, tmp: Path) -> Iterator[Prometheus]:
    """Start Prometheus with ``config`` on 127.0.0.1, its TSDB in ``tmp``."""
    exe = prometheus_binary()
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                exe,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, "prometheus", log)
        _wait_ready(f"http://127.0.0.1:{port}/-/ready", proc, log)
        yield Prometheus(port, proc)
    finally:
        stop(proc)
