"""Facts the docs state that the repository can check: packages, addresses, paths, commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def test_the_architecture_page_lists_every_package_and_module() -> None:
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`(?:cmi_cli/)?([a-z_]+)(?:/|\.py)`", page))
    root = REPO / "cmi_cli"
    found = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("__")}
    found |= {p.stem for p in root.glob("*.py") if not p.stem.startswith("__")}
    assert found <= listed, f"docs/architecture.md misses {sorted(found - listed)}"


def test_one_docs_address_in_pyproject_and_mkdocs() -> None:
    urls = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]
    site = yaml.load((REPO / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_Loader)
    assert urls["Documentation"] == site["site_url"]


def test_docs_name_no_path_outside_the_repository() -> None:
    for page in (REPO / "docs").rglob("*.md"):
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"(?<![\w.])\.\./[\w./-]+", text):
            target = (page.parent / match.group(0)).resolve()
            assert REPO in target.parents, f"{page.name}: {match.group(0)} leaves the repository"


def test_docs_use_ga_gcloud_commands() -> None:
    for page in [*(REPO / "docs").rglob("*.md"), REPO / "README.md"]:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"gcloud (alpha|beta) ", text), page.name


class _Loader(yaml.SafeLoader):
    """Reads mkdocs.yml's ``!!python/name:`` tags as plain strings."""


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: suffix)
