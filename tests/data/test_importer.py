"""`cmi data import`: folders, zips and parquet exports copied into a real DVC project."""

import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from _make import make_pairs, write_folder, write_parquet

from cmi_cli.classes import foodseg103_class_names
from cmi_cli.data.importer import PASSWORD_ENV, import_foodseg103
from cmi_cli.data.layout import open_dataset
from cmi_cli.data.versioning import data_version, quiet_dvc
from cmi_cli.errors import DataError, UsageError

NAMES = list(foodseg103_class_names())


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "site-cache"))
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    from dvc.repo import Repo

    root = tmp_path / "proj"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    with quiet_dvc():
        Repo.init(str(root)).close()
    return root


def dataset(folder: Path) -> Path:
    splits = {"train": make_pairs(2, seed=1), "test": make_pairs(1, seed=2, prefix="t")}
    return write_folder(folder, splits, NAMES)


def hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def zip_folder(folder: Path, out: Path, top: str) -> Path:
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, f"{top}/{path.relative_to(folder)}")
    return out


def leftovers(project: Path) -> list[str]:
    data = project / "data"
    return sorted(p.name for p in data.iterdir() if ".import-" in p.name) if data.exists() else []


def test_folder_is_copied_and_tracked(project, tmp_path):
    src = dataset(tmp_path / "download")
    dest = import_foodseg103(src, project, show_progress=False)
    assert dest == project / "data" / "foodseg103"
    assert hashes(dest) == hashes(src)
    assert (project / "data" / "foodseg103.dvc").is_file()
    assert (data_version(dest) or "").endswith(".dir")
    assert open_dataset(dest).splits() == ["train", "test"]
    staged = subprocess.run(
        ["git", "diff", "--cached", "--name-only"], cwd=project, capture_output=True, text=True
    ).stdout.split()
    assert "data/foodseg103.dvc" in staged
    assert leftovers(project) == []


def test_nested_folder_as_in_the_official_zip(project, tmp_path):
    src = dataset(tmp_path / "download" / "FoodSeg103")
    (tmp_path / "download" / "__MACOSX").mkdir()
    dest = import_foodseg103(tmp_path / "download", project, name="fs", show_progress=False)
    assert dest == project / "data" / "fs"
    assert hashes(dest) == hashes(src)


def test_zip(project, tmp_path):
    src = dataset(tmp_path / "download")
    archive = zip_folder(src, tmp_path / "FoodSeg103.zip", "FoodSeg103")
    dest = import_foodseg103(archive, project, show_progress=False)
    assert hashes(dest) == hashes(src)
    assert leftovers(project) == []


@pytest.mark.skipif(shutil.which("zip") is None, reason="needs the zip tool to encrypt")
def test_password_protected_zip(project, tmp_path, monkeypatch):
    src = dataset(tmp_path / "FoodSeg103")
    archive = tmp_path / "FoodSeg103.zip"
    subprocess.run(
        ["zip", "-q", "-r", "-P", "s3cret", str(archive), "FoodSeg103"], cwd=tmp_path, check=True
    )
    with pytest.raises(DataError, match="password protected") as err:
        import_foodseg103(archive, project, show_progress=False)
    assert "--password" in (err.value.hint or "")
    assert PASSWORD_ENV in (err.value.hint or "")
    with pytest.raises(DataError, match="wrong password"):
        import_foodseg103(archive, project, password="nope", show_progress=False)
    assert not (project / "data" / "foodseg103").exists()
    assert leftovers(project) == []

    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    dest = import_foodseg103(archive, project, show_progress=False)
    assert hashes(dest) == hashes(src)


def test_parquet_folder_keeps_its_layout(project, tmp_path):
    rows = {"train": make_pairs(2, seed=3), "validation": make_pairs(1, seed=4)}
    src = write_parquet(tmp_path / "hf", rows)
    (src / ".cache").mkdir()
    (src / ".cache" / "junk").write_text("not copied")
    dest = import_foodseg103(src, project, show_progress=False)
    assert sorted(hashes(dest)) == [
        "data/train-00000-of-00001.parquet",
        "data/validation-00000-of-00001.parquet",
    ]
    source = open_dataset(dest)
    assert source.kind == "parquet"
    assert len(source.items("train")) == 2


def test_parquet_without_image_columns_is_refused(project, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "hf").mkdir()
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "hf" / "train-00000.parquet")
    with pytest.raises(DataError, match="no column image"):
        import_foodseg103(tmp_path / "hf", project, show_progress=False)


@pytest.mark.parametrize("make", ["missing", "empty_folder", "text_file", "zip_of_text"])
def test_bad_sources(project, tmp_path, make):
    src = tmp_path / "src"
    if make == "empty_folder":
        src.mkdir()
    elif make == "text_file":
        src.write_text("hello")
    elif make == "zip_of_text":
        with zipfile.ZipFile(src, "w") as archive:
            archive.writestr("readme.txt", "nothing here")
    with pytest.raises(DataError):
        import_foodseg103(src, project, show_progress=False)
    assert not (project / "data" / "foodseg103").exists()
    assert leftovers(project) == []


def test_broken_category_file_is_refused(project, tmp_path):
    src = dataset(tmp_path / "download")
    (src / "category_id.txt").write_text("0 background\n5 rice\n")
    with pytest.raises(DataError, match="expected id 1"):
        import_foodseg103(src, project, show_progress=False)


def test_destination_exists(project, tmp_path):
    first = dataset(tmp_path / "a")
    import_foodseg103(first, project, show_progress=False)
    old_version = data_version(project / "data" / "foodseg103")
    second = tmp_path / "b"
    write_folder(second, {"train": make_pairs(3, seed=9)}, NAMES)
    with pytest.raises(DataError, match="already exists") as err:
        import_foodseg103(second, project, show_progress=False)
    assert "--overwrite" in (err.value.hint or "")

    dest = import_foodseg103(second, project, overwrite=True, show_progress=False)
    assert hashes(dest) == hashes(second)
    assert data_version(dest) not in (None, old_version)
    assert leftovers(project) == []


def test_bad_name(project, tmp_path):
    with pytest.raises(UsageError, match="plain folder name"):
        import_foodseg103(dataset(tmp_path / "a"), project, name="../escape")


def test_single_parquet_file_says_what_is_expected_found_and_to_do(project, tmp_path):
    rows = {"train": make_pairs(2, seed=3), "validation": make_pairs(1, seed=4)}
    src = write_parquet(tmp_path / "hf", rows)
    (one,) = src.rglob("train-*.parquet")
    with pytest.raises(DataError) as info:
        import_foodseg103(one, project, show_progress=False)
    text = info.value.one_line()
    assert "zip" not in text.lower(), text
    assert f"{one} is a single parquet file" in text
    assert "folder" in text
    assert "train-*.parquet" in text
    assert "validation-*.parquet" in text
    assert "cmi data import" in text
    assert not (project / "data" / "foodseg103").exists()


def test_parquet_files_that_name_no_split_are_explained(project, tmp_path):
    rows = {"train": make_pairs(2, seed=3)}
    src = write_parquet(tmp_path / "hf", rows)
    for path in src.rglob("*.parquet"):
        path.rename(src / "foodseg.parquet")
    with pytest.raises(DataError) as info:
        import_foodseg103(src, project, show_progress=False)
    text = info.value.one_line()
    assert "foodseg.parquet" in text, text
    assert "names no split" in text, text
    assert "train-*.parquet" in text
