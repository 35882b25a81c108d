"""The docs site: generated reference pages in sync with the code, every config key and HTTP
route documented, and (with mkdocs installed) a strict build."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cmi_cli.cli import docs_gen

REPO = Path(__file__).resolve().parents[2]
REGENERATE = "python -m cmi_cli.cli.docs_gen"


@pytest.mark.parametrize("page", [docs_gen.CLI_PAGE, docs_gen.CONFIG_PAGE], ids=str)
def test_generated_page_is_current(page: Path) -> None:
    expected = docs_gen.render_pages()[page]
    committed = (REPO / page).read_text(encoding="utf-8")
    assert committed == expected, f"{page} is stale: run `{REGENERATE}`"


def test_check_mode_reports_stale_pages_and_writes_nothing(tmp_path: Path) -> None:
    assert docs_gen.main(["--root", str(tmp_path), "--check"]) == 1
    assert not (tmp_path / "docs").exists()
    assert docs_gen.main(["--root", str(tmp_path)]) == 0
    assert docs_gen.main(["--root", str(tmp_path), "--check"]) == 0


def test_cli_reference_documents_every_command_and_option() -> None:
    import typer

    from cmi_cli.cli.app import app

    text = docs_gen.cli_reference()
    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="cmi")
    for path, cmd, _ in docs_gen._walk(root, ctx, ["cmi"]):
        assert f"## `{' '.join(path)}`" in text
        for param in cmd.params:
            if param.param_type_name == "option" and param.name not in docs_gen._ROOT_ONLY:
                assert f"`{param.opts[0]}" in text or f"/ {param.opts[0]}" in text, param.opts


def test_yaml_comments_reads_header_values_and_comments() -> None:
    text = (
        "# @package _global_\n# What this file is.\n# Second line.\n"
        "a: 1 # trailing\n# above b\nb:\n  c: 'x # not a comment'  # real\n  d: [1, 2]\n"
    )
    header, found = docs_gen.yaml_comments(text)
    assert header == "What this file is. Second line."
    assert found["a"] == ("1", "trailing")
    assert found["b"] == ("", "above b")
    assert found["b.c"] == ("'x # not a comment'", "real")
    assert found["b.d"] == ("[1, 2]", "")


def test_config_reference_lists_every_key_of_every_option() -> None:
    from cmi_cli.config import packaged_config_dir

    text = docs_gen.config_reference()
    root = packaged_config_dir()
    for path in [root / "train.yaml", *sorted(root.glob("*/*.yaml"))]:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        data.pop("defaults", None)
        for key, _ in docs_gen._leaves(data):
            assert f"| `{key}` |" in text, f"{path.relative_to(root)}: {key}"
        if path.parent != root:
            assert path.stem in text


def test_http_api_page_lists_every_route() -> None:
    import importlib
    import pkgutil

    import cmi_cli.serving.routes as routes

    page = (REPO / "docs" / "reference" / "http-api.md").read_text(encoding="utf-8")
    for info in pkgutil.iter_modules(routes.__path__):
        router = getattr(importlib.import_module(f"{routes.__name__}.{info.name}"), "router", None)
        for route in getattr(router, "routes", []):
            for method in sorted(getattr(route, "methods", None) or {"GET"}):
                if method != "HEAD":
                    assert f"`{method} {route.path}`" in page, f"{method} {route.path}"


def test_nav_pages_exist() -> None:
    config = yaml.load((REPO / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_Loader)

    def pages(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [p for v in node.values() for p in pages(v)]
        if isinstance(node, list):
            return [p for v in node for p in pages(v)]
        return []

    listed = pages(config["nav"])
    for page in listed:
        assert (REPO / "docs" / page).is_file(), page
    # every page of the site is reachable from the navigation
    on_disk = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md")}
    assert on_disk <= set(listed), on_disk - set(listed)


class _Loader(yaml.SafeLoader):
    """Reads mkdocs.yml's ``!!python/name:`` tags as plain strings."""


_Loader.add_multi_constructor(
    "tag:yaml.org,2002:python/", lambda loader, suffix, node: loader.construct_scalar(node)
)


def _mkdocs() -> str | None:
    return shutil.which("mkdocs") or shutil.which("mkdocs", path=str(Path(sys.executable).parent))


@pytest.mark.slow
@pytest.mark.skipif(_mkdocs() is None, reason="mkdocs is not installed (the docs extra)")
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    run = subprocess.run(
        [str(_mkdocs()), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
