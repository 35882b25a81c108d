"""`cmi init` end to end: real git, real DVC, a real folder remote and the real sample generator."""

import hashlib
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cmi_cli.data import versioning
from cmi_cli.data.versioning import data_version, pull, push, status
from cmi_cli.errors import DvcError, UsageError
from cmi_cli.project import LOCAL_REMOTE_DIR, InitResult, init_project

TINY = {"sample_images": 6, "sample_size": 48, "show_progress": False}


@pytest.fixture(autouse=True)
def no_git_identity(tmp_path, monkeypatch):
    """A user with no git identity and no global config; DVC's site cache in the test folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "site-cache"))
    for var in ("NAME", "EMAIL"):
        for who in ("AUTHOR", "COMMITTER"):
            monkeypatch.delenv(f"GIT_{who}_{var}", raising=False)


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, check=True, capture_output=True, text=True
    ).stdout


def hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def project(tmp_path) -> InitResult:
    return init_project(tmp_path / "proj", **TINY)


def test_init_makes_a_clean_committed_project(project, tmp_path):
    root = tmp_path / "proj"
    assert project.root == root
    assert project.data_root == root / "data" / "foodseg103"
    assert project.committed
    for name in (
        ".git",
        ".dvc/config",
        "dvc.yaml",
        "configs/README.md",
        ".gitignore",
        ".dvcignore",
    ):
        assert (root / name).exists(), name
    assert len(list((project.data_root / "Images" / "img_dir").rglob("*.jpg"))) == 6
    assert (project.data_root / "category_id.txt").is_file()

    assert git(root, "status", "--porcelain") == ""
    committed = set(git(root, "ls-files").split())
    assert {"data/foodseg103.dvc", "dvc.yaml", ".dvc/config", "configs/README.md"} <= committed
    assert not any(name.startswith(("data/foodseg103/", LOCAL_REMOTE_DIR)) for name in committed)
    assert git(root, "log", "--format=%an <%ae>").strip() == "cmi <cmi@localhost>"
    assert git(root, "config", "--local", "user.name").strip() == "cmi"

    assert project.data_version == data_version(project.data_root)
    assert project.data_version
    assert project.data_version.endswith(".dir")
    config = (root / ".dvc" / "config").read_text()
    assert "url = ../.dvc-storage" in config
    assert "remote = storage" in config
    assert project.remote_url == str(root / LOCAL_REMOTE_DIR)
    # 6 images + 6 masks + category_id.txt + the directory manifest
    assert project.pushed == 14
    assert f"/{LOCAL_REMOTE_DIR}/" in (root / ".gitignore").read_text()
    assert f"/{LOCAL_REMOTE_DIR}/" in (root / ".dvcignore").read_text()

    data_status = status(targets=["data/foodseg103"], cwd=root)
    assert data_status.in_sync, data_status


def test_init_keeps_an_existing_identity(tmp_path, monkeypatch):
    home_config = tmp_path / "gitconfig"
    home_config.write_text("[user]\n\tname = Ada\n\temail = ada@example.com\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home_config))
    init_project(tmp_path / "proj", with_sample=False, show_progress=False)
    root = tmp_path / "proj"
    assert git(root, "log", "--format=%an").strip() == "Ada"
    assert subprocess.run(["git", "config", "--local", "user.name"], cwd=root).returncode == 1


def test_dvc_yaml_stages_call_cmi(project):
    stages = yaml.safe_load((project.root / "dvc.yaml").read_text())["stages"]
    assert stages["validate"] == {
        "cmd": "cmi data validate data/foodseg103",
        "deps": ["data/foodseg103"],
    }
    assert stages["stats"]["cmd"] == "cmi data stats data/foodseg103 --out reports/data"
    assert stages["stats"]["outs"] == ["reports/data/class_shares.png"]
    assert stages["stats"]["metrics"] == [{"reports/data/stats.json": {"cache": False}}]
    assert status(cwd=project.root).stages  # never run yet: `dvc repro` runs them


def test_round_trip_push_delete_pull_is_byte_identical(project):
    root, data = project.root, project.data_root
    assert data is not None
    # "add": a new file in the dataset, recorded with dvc add
    (data / "README.txt").write_text("synthetic FoodSeg103-shaped sample\n")
    versioning.track([data], cwd=root)
    before = hashes(data)
    assert push(cwd=root, show_progress=False).transferred == 2  # the new file and manifest

    shutil.rmtree(data)
    shutil.rmtree(root / ".dvc" / "cache")
    result = pull(cwd=root, show_progress=False)
    assert result.transferred == len(before)
    assert hashes(data) == before
    assert status(targets=["data/foodseg103"], cwd=root).in_sync


def test_status_reports_what_an_emptied_remote_lacks(project):
    shutil.rmtree(project.root / LOCAL_REMOTE_DIR)
    result = status(cwd=project.root)
    assert len(result.not_pushed) == 14
    assert not result.in_sync


def test_pull_without_a_remote_says_how_to_add_one(project):
    from dvc.repo import Repo

    with versioning.quiet_dvc(), Repo(str(project.root)) as repo, repo.config.edit() as conf:
        del conf["core"]["remote"]
        del conf["remote"]["storage"]
    with pytest.raises(DvcError, match="no DVC remote") as err:
        pull(cwd=project.root, show_progress=False)
    assert "dvc remote add -d" in (err.value.hint or "")


def test_commands_outside_a_project(tmp_path):
    with pytest.raises(DvcError, match="not a DVC repository") as err:
        status(cwd=tmp_path)
    assert "cmi init" in (err.value.hint or "")


def test_gs_remote_is_configured_not_pushed(tmp_path, capsys):
    result = init_project(tmp_path / "proj", remote="gs://my-bucket/foodseg", **TINY)
    root = tmp_path / "proj"
    config = (root / ".dvc" / "config").read_text()
    assert "url = gs://my-bucket/foodseg" in config
    assert "remote = storage" in config
    assert result.remote_url == "gs://my-bucket/foodseg"
    assert result.pushed == 0
    assert result.committed
    assert not (root / LOCAL_REMOTE_DIR).exists()
    err = capsys.readouterr().err
    assert "cmi data push" in err
    if importlib.util.find_spec("dvc_gs") is None:
        assert "pip install 'cmi-cli[gcp]'" in err
    assert git(root, "status", "--porcelain") == ""


@pytest.mark.skipif(importlib.util.find_spec("dvc_gs") is None, reason="needs dvc-gs")
def test_gs_remote_without_credentials_never_waits_on_a_metadata_server(tmp_path):
    """No credentials, not on Google Cloud: anonymous access at once, no GCE metadata retries.

    gcsfs, left to itself, asks the GCE metadata server for a token with exponential backoff
    (about a minute where there is none). A local stand-in records what is asked of it.
    """
    import http.server
    import os
    import sys
    import threading

    asked: list[str] = []

    class Metadata(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(404)  # and no Metadata-Flavor: not a GCE machine
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "STORAGE_EMU"))}
    env.update(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"))
    env.update(GCE_METADATA_HOST=host, GCE_METADATA_IP=host, GCE_METADATA_ROOT=host)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cmi_cli", "init", str(tmp_path / "proj"), "--images", "6",
             "--size", "48", "--remote", "gs://my-bucket/foodseg"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    assert "no Google Cloud credentials" in done.stderr
    assert "cmi data push" in done.stderr
    assert not [p for p in asked if "service-accounts" in p], asked


def test_folder_remote_given_as_a_path(tmp_path):
    store = tmp_path / "shared store"
    result = init_project(tmp_path / "proj", remote=str(store), **TINY)
    assert result.pushed == 14
    assert result.remote_url == str(store)
    assert sum(1 for p in store.rglob("*") if p.is_file()) == 14


def test_refuses_an_existing_project(project):
    with pytest.raises(DvcError, match="already a DVC project") as err:
        init_project(project.root, **TINY)
    assert "already initialised" in (err.value.hint or "")


def test_existing_folder_keeps_its_files_out_of_the_commit(tmp_path):
    root = tmp_path / "code"
    root.mkdir()
    (root / "train.py").write_text("print('mine')\n")
    (root / ".gitignore").write_text("secret.txt\n")
    result = init_project(root, with_sample=False, show_progress=False)
    assert result.committed
    assert result.data_root is None
    assert result.data_version is None
    assert "train.py" not in git(root, "ls-files").split()
    gitignore = (root / ".gitignore").read_text()
    assert gitignore.startswith("secret.txt\n")
    assert "wandb/" in gitignore
    assert git(root, "status", "--porcelain").strip() == "?? train.py"


def test_refuses_to_overwrite_and_changes_nothing(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(UsageError, match=r"already has dvc\.yaml"):
        init_project(root, **TINY)
    assert sorted(p.name for p in root.iterdir()) == ["dvc.yaml"]


def test_a_failure_midway_removes_what_init_wrote(tmp_path, monkeypatch):
    def broken_push(**kwargs):
        raise DvcError("remote is full")

    monkeypatch.setattr(versioning, "push", broken_push)
    root = tmp_path / "existing"
    root.mkdir()
    (root / "notes.txt").write_text("keep me\n")
    with pytest.raises(DvcError, match=r"failed while pushing the sample.*remote is full"):
        init_project(root, **TINY)
    assert sorted(p.name for p in root.iterdir()) == ["notes.txt"]

    with pytest.raises(DvcError, match="was removed"):
        init_project(tmp_path / "fresh", **TINY)
    assert not (tmp_path / "fresh").exists()
