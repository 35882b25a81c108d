"""Imports point down, never up: import-linter's contracts in pyproject.toml, run for real."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
REPO = Path(__file__).resolve().parents[2]
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports({args}))"


def _contracts() -> list[dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["importlinter"]["contracts"]


def _lint(cwd: Path, config: str | None = None) -> subprocess.CompletedProcess[str]:
    args = f"config_filename={config!r}, no_cache=True" if config else "no_cache=True"
    return subprocess.run(
        [sys.executable, "-c", LINT.format(args=args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )


def test_the_import_contracts_are_kept() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_contract_lists_exceptions() -> None:
    for contract in _contracts():
        assert "ignore_imports" not in contract, contract["name"]


def test_every_package_and_module_of_cmi_cli_has_a_layer() -> None:
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    named = {part.strip(" ()") for layer in layers for part in layer.replace(":", "|").split("|")}
    root = REPO / "cmi_cli"
    found = {p.name for p in root.iterdir() if (p / "__init__.py").is_file()} | {
        p.stem for p in root.glob("*.py") if p.stem not in {"__init__", "__main__"}
    }
    assert found <= named, f"not in any layer: {sorted(found - named)}"


def _optional(layer: str) -> str:
    """Mark every package of a layer optional: the copy has only two of them."""
    sep = ":" if ":" in layer else "|"
    return f" {sep} ".join(f"({name.strip(' ()')})" for name in layer.split(sep))


@pytest.mark.parametrize("lazy", [False, True], ids=["top-level", "inside-a-function"])
def test_an_upward_import_breaks_the_contract(tmp_path: Path, lazy: bool) -> None:
    """The same layers, on a two-package copy: data importing training is caught, lazily too."""
    pkg = tmp_path / "cmi_cli"
    for sub in ("data", "training"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "training" / "train.py").write_text("X = 1\n")
    upward = "from cmi_cli.training.train import X\n"
    body = f"def f():\n    {upward}    return X\n" if lazy else upward
    (pkg / "data" / "layout.py").write_text(body)
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    config = tmp_path / "contracts.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [tool.importlinter]
            root_package = "cmi_cli"
            [[tool.importlinter.contracts]]
            name = "layers"
            type = "layers"
            containers = ["cmi_cli"]
            layers = {[_optional(layer) for layer in layers]!r}
            """
        )
    )
    result = _lint(tmp_path, str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cmi_cli.data.layout -> cmi_cli.training.train" in result.stdout
