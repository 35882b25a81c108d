"""The wheel ships the configs and resources, and the CLI works from it outside the repo."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            out,
            REPO,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("cmi_cli-*.whl")
    return wheel


def test_wheel_contains_configs_and_class_list(wheel: Path) -> None:
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert "cmi_cli/resources/category_id.txt" in names
    assert "cmi_cli/configs/train.yaml" in names
    assert any(n.startswith("cmi_cli/configs/data/") for n in names)
    assert any(n.startswith("cmi_cli/configs/model/") for n in names)
    assert not any(n.startswith("tests/") for n in names)


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_help_and_init(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # Dependencies come from the test environment (a .pth line adds its site-packages without
    # running its .pth files, so the editable cmi_cli of the checkout stays invisible); the
    # package itself comes only from the wheel.
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel],
        check=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    where = subprocess.run(
        [
            py,
            "-c",
            "import cmi_cli, importlib.resources as r; print(cmi_cli.__file__); "
            "print(r.files('cmi_cli.configs').joinpath('train.yaml').is_file())",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    assert where[0].startswith(str(env_dir))
    assert where[1] == "True"
    cmi = env_dir / "bin" / "cmi"
    help_out = subprocess.run(
        [cmi, "--help"], cwd=work, capture_output=True, text=True, check=True, env=env
    )
    assert "quickstart" in help_out.stdout
    init = subprocess.run(
        [cmi, "init", "proj", "--images", "4", "--size", "32"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert init.returncode == 0, init.stderr
    assert (work / "proj" / "data" / "foodseg103.dvc").is_file()
    assert (work / "proj" / "dvc.yaml").is_file()


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The source distribution, built without isolation, and the build's output."""
    out = tmp_path_factory.mktemp("sdist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", out, REPO],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (archive,) = out.glob("cmi_cli-*.tar.gz")
    return archive, done.stdout + done.stderr


def test_sdist_holds_what_the_tests_need_and_the_license(sdist: tuple[Path, str]) -> None:
    import tarfile

    archive, log = sdist
    with tarfile.open(archive) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        top = next(n for n in tar.getnames() if n.endswith("/PKG-INFO") and n.count("/") == 1)
        pkg_info = tar.extractfile(top).read().decode()  # type: ignore[union-attr]
    for needed in (
        "LICENSE",
        "tests/conftest.py",
        "tests/test_packaging.py",
        "configs/train.yaml",
        "docs/reference/cli.md",
        "mkdocs.yml",
        "requirements/serve.txt",
        "deploy/gcp",
        ".github/workflows/ci.yml",
    ):
        assert needed in names or any(n.startswith(needed + "/") for n in names), needed
    assert "License-Expression: Apache-2.0" in pkg_info
    assert "License-File: LICENSE" in pkg_info
    # PEP 639 metadata: setuptools no longer warns that the license table is deprecated.
    warnings = [line for line in log.lower().splitlines() if "warn" in line or "deprecat" in line]
    assert not [line for line in warnings if "licen" in line], warnings


def test_license_file_is_the_apache_2_text() -> None:
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("Apache License\n")
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_readme_images_work_on_pypi() -> None:
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", readme)
    for url in images:
        assert url.startswith("https://"), f"{url} is relative: PyPI cannot show it"
        local = url.split("/main/", 1)[-1]
        assert (REPO / local).is_file(), f"{url} points at no file of the repository"
