"""The root CLI: help, version, global options, error reporting and a light start-up."""

from __future__ import annotations

import json
import subprocess
import sys

import typer
from typer.testing import CliRunner

from cmi_cli import __version__
from cmi_cli.cli.app import app, reflow

runner = CliRunner()

DESIGN_CARD = [
    "init",
    "quickstart",
    "info",
    "data",
    "train",
    "sweep",
    "profile",
    "export",
    "quantize",
    "serve",
    "drift-check",
]
DATA_COMMANDS = ["pull", "push", "status", "sample", "import", "validate", "stats"]
HEAVY = ["torch", "lightning", "onnxruntime", "evidently", "wandb", "dvc", "pandas"]


def test_help_lists_every_command_of_the_design_card() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    for name in DESIGN_CARD:
        assert f" {name} " in result.output, name
    for panel in ("Project", "Data", "Model", "Optimise", "Serve & monitor"):
        assert panel in result.output


def test_data_help_lists_its_commands() -> None:
    result = runner.invoke(app, ["data", "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    for name in DATA_COMMANDS:
        assert f" {name} " in result.output, name


def test_help_paragraphs_wrap_to_the_terminal_not_to_the_source() -> None:
    text = "Short line.\n\n    Second paragraph\n    goes on.\n\n    \b\n    kept\n    as is\n    "
    assert reflow(text) == "Short line.\n\nSecond paragraph goes on.\n\n\b\nkept\nas is"
    wide = CliRunner().invoke(app, ["prune", "--help"], env={"COLUMNS": "200"})
    assert wide.exit_code == 0
    # The docstring breaks this sentence after "validation"; the help must not.
    assert "and validation mIoU before and after" in wide.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"cmi {__version__}"


def test_every_command_of_the_design_card_is_registered_once() -> None:
    names = [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
    assert len(names) == len(set(names))
    assert set(DESIGN_CARD) <= set(names)


def test_user_error_is_one_line_without_traceback(tmp_path) -> None:
    result = runner.invoke(app, ["info", str(tmp_path / "missing")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("error: no such file or folder")
    assert "Traceback" not in result.output


def test_verbose_shows_the_traceback(tmp_path) -> None:
    result = runner.invoke(app, ["--verbose", "info", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "Traceback" in result.output
    assert "ArtifactError" in result.output


def test_verbose_and_quiet_exclude_each_other() -> None:
    result = runner.invoke(app, ["-v", "-q", "info", "."])
    assert result.exit_code == 2


def test_bad_option_value_is_a_usage_error(tmp_path) -> None:
    result = runner.invoke(app, ["data", "sample", "--images", "many"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_missing_default_dataset_names_the_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["data", "validate"])
    assert result.exit_code == 1
    assert "cmi init" in result.output


def test_cli_startup_imports_no_heavy_library() -> None:
    code = (
        "import sys, json\n"
        "from cmi_cli.cli.app import app\n"
        "try:\n"
        "    app(['--help'], prog_name='cmi')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == []


def test_start_up_modules_keep_real_annotations() -> None:
    # String annotations make Typer compile and evaluate every signature on each run.
    from pathlib import Path

    import cmi_cli.cli

    folder = Path(cmi_cli.cli.__file__).parent
    lazy = [
        p.name
        for p in folder.glob("*.py")
        if p.name != "docs_gen.py"
        and "from __future__ import annotations" in p.read_text().splitlines()
    ]
    assert lazy == []


def test_python_dash_m_runs_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cmi_cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"cmi {__version__}"


def test_real_subprocess_error_exit_code(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cmi_cli", "info", str(tmp_path / "missing.onnx")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "no such file or folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def _all_command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]

    def walk(group: object, prefix: list[str]) -> None:
        for name, cmd in getattr(group, "commands", {}).items():
            paths.append([*prefix, name])
            walk(cmd, [*prefix, name])

    walk(root, [])
    return paths


def test_no_help_labels_a_flag_with_a_type() -> None:
    for path in _all_command_paths():
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "160"})
        assert result.exit_code == 0, path
        assert "<bool>" not in result.output, f"cmi {' '.join(path)} --help"


def test_info_help_says_what_it_describes() -> None:
    result = runner.invoke(app, ["info", "--help"], env={"COLUMNS": "160"})
    for kind in ("dataset", "checkpoint", "ONNX"):
        assert kind in result.output
    assert "later" not in result.output
