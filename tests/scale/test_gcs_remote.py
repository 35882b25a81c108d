"""DVC on a gs:// remote, against a real GCS emulator on 127.0.0.1 (issues 13 and 17.2, 17.3).

The emulator is reached exactly as docs/cloud.md says: ``STORAGE_EMULATOR_HOST`` for the
storage client and gcsfs, or the remote's ``endpointurl`` for DVC alone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _scale_servers import GcsEmulator

BUCKET_TYPE = "Could not determine bucket type"


def cmi(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "cmi_cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def base_env(tmp: Path) -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "disabled", "COLUMNS": "200", "HOME": str(tmp)}
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG"):
        env.pop(name, None)
    env["CLOUDSDK_CONFIG"] = str(tmp / "no-gcloud")  # no user credentials leak in
    return env


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def cache_objects(root: Path) -> dict[str, str]:
    """The DVC cache as {relative path: md5 of its bytes}."""
    cache = root / ".dvc" / "cache" / "files" / "md5"
    return {
        p.relative_to(cache).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in cache.rglob("*")
        if p.is_file()
    }


@pytest.mark.slow
def test_init_pushes_then_pull_restores_every_byte(tmp_path: Path, gcs: GcsEmulator) -> None:
    env = {**base_env(tmp_path), "STORAGE_EMULATOR_HOST": gcs.host}
    init = cmi(tmp_path, "init", "proj", "--remote", f"gs://{gcs.bucket}/init", "--images", "6",
               "--size", "32", env=env)  # fmt: skip
    root = tmp_path / "proj"
    out = init.stdout + init.stderr
    assert "not pushed" not in out
    assert BUCKET_TYPE not in out
    assert "credentials" not in out.lower()

    # Issue 17.2: init pushed the sample; the bucket holds exactly the DVC cache.
    stored = gcs.objects("init/")
    assert stored, "cmi init left the bucket empty"
    cache = cache_objects(root)
    remote = {
        name.removeprefix("init/files/md5/"): hashlib.md5(data).hexdigest()
        for name, data in stored.items()
    }
    assert remote == cache

    data = root / "data" / "foodseg103"
    before = files_of(data)
    push = cmi(root, "data", "push", env=env)
    assert BUCKET_TYPE not in push.stderr
    shutil.rmtree(data)
    shutil.rmtree(root / ".dvc" / "cache")
    pull = cmi(root, "data", "pull", env=env)
    assert BUCKET_TYPE not in pull.stderr
    assert "credentials" not in pull.stderr.lower()
    assert files_of(data) == before


@pytest.mark.slow
def test_missing_credentials_give_one_line_not_six_warnings(
    tmp_path: Path, gcs: GcsEmulator
) -> None:
    env = base_env(tmp_path)  # no STORAGE_EMULATOR_HOST, no credentials anywhere
    cmi(tmp_path, "init", "proj", "--remote", f"gs://{gcs.bucket}/creds", "--no-sample", env=env)
    root = tmp_path / "proj"
    # The emulator as a plain custom endpoint: DVC reaches it, credentials are still looked for.
    subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "modify", "storage", "endpointurl", gcs.host],
        cwd=root,
        check=True,
        env=env,
    )
    (root / "extra").mkdir()
    (root / "extra" / "a.txt").write_text("hello\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "extra"], cwd=root, check=True, env=env,
                   capture_output=True)  # fmt: skip
    push = cmi(root, "data", "push", env=env)
    assert push.stderr.count("no Google Cloud credentials") == 1, push.stderr
    assert "gcloud auth application-default login" in push.stderr
    assert "GOOGLE_APPLICATION_CREDENTIALS" in push.stderr
    assert "STORAGE_EMULATOR_HOST" in push.stderr
    assert BUCKET_TYPE not in push.stderr
    assert gcs.objects("creds/"), "the anonymous push reached the bucket"
