"""DVC versioning against a real git repository, a real DVC repository and a real folder remote."""

import io
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from cmi_cli.data import versioning
from cmi_cli.data.dvc_errors import RemoteInfo, raise_translated
from cmi_cli.data.versioning import (
    StatusResult,
    data_version,
    find_project_root,
    pull,
    push,
    render_status,
    status,
    track,
)
from cmi_cli.errors import DataError, DvcError


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No user git identity or config, and DVC's site cache inside the test folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "site-cache"))


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, check=True, capture_output=True, text=True
    ).stdout


def make_repo(root: Path, remote: Path | None) -> Path:
    from dvc.repo import Repo

    root.mkdir(parents=True)
    git(root, "init", "-q")
    with versioning.quiet_dvc(), Repo.init(str(root)) as repo:
        if remote is not None:
            with repo.config.edit() as conf:
                conf["remote"]["storage"] = {"url": str(remote)}
                conf["core"]["remote"] = "storage"
    data = root / "data" / "ds"
    (data / "sub").mkdir(parents=True)
    for i in range(3):
        (data / "sub" / f"{i}.txt").write_text(f"payload {i}\n")
    (data / "top.bin").write_bytes(bytes(range(256)))
    return root


@pytest.fixture
def repo(tmp_path, isolated) -> Path:
    root = make_repo(tmp_path / "proj", tmp_path / "remote")
    track([Path("data/ds")], cwd=root)
    return root


def test_find_project_root_walks_up_and_fails_outside(repo, tmp_path):
    assert find_project_root(repo / "data" / "ds" / "sub") == repo.resolve()
    with pytest.raises(DvcError, match="not a DVC repository") as err:
        find_project_root(tmp_path)
    assert "cmi init" in (err.value.hint or "")


def test_track_writes_dvc_file_and_stages_it_in_git(repo):
    staged = set(git(repo, "diff", "--cached", "--name-only").split())
    assert {"data/ds.dvc", "data/.gitignore"} <= staged
    assert "/ds" in (repo / "data" / ".gitignore").read_text()


def test_track_missing_path(repo):
    with pytest.raises(DataError, match="does not exist"):
        track([Path("data/nope")], cwd=repo)


def test_data_version_reads_the_dvc_file(repo):
    expected = yaml.safe_load((repo / "data" / "ds.dvc").read_text())["outs"][0]["md5"]
    assert expected.endswith(".dir")
    assert data_version(repo / "data" / "ds") == expected
    assert data_version(repo / "data" / "ds.dvc") == expected
    assert data_version(repo / "data" / "ds" / "sub" / "0.txt") == expected
    (repo / "other").mkdir()
    assert data_version(repo / "other") is None


def test_data_version_does_not_import_dvc(repo):
    code = (
        "import sys; from pathlib import Path; from cmi_cli.data.versioning import data_version;"
        f"v = data_version(Path({str(repo / 'data' / 'ds')!r}));"
        "assert v and v.endswith('.dir'), v; assert 'dvc' not in sys.modules, 'dvc imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_push_status_pull_cycle(repo, tmp_path):
    before = status(cwd=repo)
    assert before.remote == "storage"
    assert len(before.not_pushed) == 5  # four files and the directory manifest
    assert not before.in_sync

    result = push(cwd=repo, show_progress=False)
    assert (result.direction, result.remote, result.transferred) == ("push", "storage", 5)
    assert result.url == str(tmp_path / "remote")
    assert status(cwd=repo).in_sync
    assert result.summary() == f"5 files to remote 'storage' ({tmp_path / 'remote'})"
    again = push(cwd=repo, show_progress=False)
    assert again.up_to_date
    assert again.summary().endswith("already up to date")

    original = (repo / "data" / "ds" / "top.bin").read_bytes()
    shutil.rmtree(repo / "data" / "ds")
    shutil.rmtree(repo / ".dvc" / "cache")
    missing = status(cwd=repo)
    assert ("data/ds", "deleted") in missing.workspace or missing.not_pulled

    pulled = pull(cwd=repo, show_progress=False)
    assert pulled.transferred == 4  # DVC counts the files fetched, not the manifest
    assert pulled.workspace.get("added") == 4
    assert pulled.summary().endswith("; workspace: 4 added")
    assert (repo / "data" / "ds" / "top.bin").read_bytes() == original
    assert status(cwd=repo).in_sync


def test_status_sees_workspace_edits_and_an_emptied_remote(repo, tmp_path):
    push(cwd=repo, show_progress=False)
    (repo / "data" / "ds" / "top.bin").write_bytes(b"changed")
    assert status(cwd=repo).workspace == [("data/ds", "modified")]
    shutil.rmtree(tmp_path / "remote")
    assert len(status(cwd=repo).not_pushed) == 5


def test_targets_are_relative_to_cwd(repo):
    result = push(targets=["ds"], cwd=repo / "data", show_progress=False)
    assert result.transferred == 5


def test_render_status_names_the_fix():
    out = io.StringIO()
    result = StatusResult(
        "storage",
        "/r",
        workspace=[("data/a", "modified"), ("data/b", "not in cache")],
        not_pushed=[f"f{i}" for i in range(12)],
        stages=[("stats", "x")],
    )
    render_status(result, Console(file=out, width=200))
    text = out.getvalue()
    assert "12 not pushed" in text
    assert "1 changed in the workspace" in text
    assert "1 absent from the workspace" in text
    assert "cmi data push" in text
    assert "... and 2 more" in text
    assert "dvc repro" in text


def test_no_remote_configured(tmp_path, isolated):
    root = make_repo(tmp_path / "proj", remote=None)
    track([Path("data/ds")], cwd=root)
    for action in (push, pull):
        with pytest.raises(DvcError, match="no DVC remote") as err:
            action(cwd=root, show_progress=False)
        assert "dvc remote add -d" in (err.value.hint or "")
    local_only = status(cwd=root)
    assert local_only.remote is None
    assert local_only.workspace == []


def test_unknown_remote_name(repo):
    with pytest.raises(DvcError, match=r"unknown DVC remote 'nope' \(configured: storage\)"):
        push(remote="nope", cwd=repo, show_progress=False)
    with pytest.raises(DvcError, match="unknown DVC remote"):
        status(remote="nope", cwd=repo)


def test_not_a_dvc_repository(tmp_path):
    with pytest.raises(DvcError, match="not a DVC repository"):
        pull(cwd=tmp_path, show_progress=False)


def test_pull_from_a_missing_local_remote(repo, tmp_path):
    with pytest.raises(DvcError, match="does not exist"):
        pull(cwd=repo, show_progress=False)


def test_pull_reports_files_missing_from_the_remote(repo, tmp_path):
    push(cwd=repo, show_progress=False)
    objects = [p for p in (tmp_path / "remote").rglob("*") if p.is_file()]
    for obj in objects:
        if not obj.name.endswith(".dir"):
            obj.unlink()
            break
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data" / "ds")
    with pytest.raises(DvcError, match=r"1 files are missing from remote 'storage'") as err:
        pull(cwd=repo, show_progress=False)
    assert "cmi data push" in (err.value.hint or "")


def test_gs_remote_without_plugin_names_the_extra(repo, monkeypatch):
    pytest.importorskip("dvc.repo")
    # As on a machine without the [gcp] extra: importing the plugin fails.
    monkeypatch.setitem(sys.modules, "dvc_gs", None)
    from dvc.repo import Repo

    with versioning.quiet_dvc(), Repo(str(repo)) as r, r.config.edit() as conf:
        conf["remote"]["gcs"] = {"url": "gs://bucket/path"}
    for action in (push, pull):
        with pytest.raises(DvcError, match="dvc-gs") as err:
            action(remote="gcs", cwd=repo, show_progress=False)
        assert "cmi-cli[gcp]" in (err.value.hint or "")


GS = RemoteInfo("storage", "gs://bucket/data", None)


def test_auth_errors_point_at_gcloud():
    class DefaultCredentialsError(Exception):
        pass

    try:
        raise OSError("listing failed") from DefaultCredentialsError("no credentials found")
    except OSError as exc:
        with pytest.raises(DvcError, match="refused access") as err:
            raise_translated(exc, GS, [], "push")
    assert "gcloud auth application-default login" in (err.value.hint or "")


def test_swallowed_connection_errors_read_as_unreachable():
    from dvc.exceptions import DownloadError

    record = logging.LogRecord(
        "dvc_data", logging.ERROR, "", 0, "failed to connect to gs", (), None
    )
    with pytest.raises(DvcError, match=r"cannot reach remote 'storage' \(gs://bucket/data\)"):
        raise_translated(DownloadError(3), GS, [record], "pull")
