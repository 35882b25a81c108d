"""Start-up cost of the CLI: median wall time of `cmi --help` against `import typer`.

The two commands are run interleaved (A, B, A, B, ...) so that machine noise hits both alike,
and the ratio of medians is printed. Goal: at most 3x; importing torch alone costs over 20x.

The package's bytecode is compiled first, as ``pip install`` does for typer and for a cmi-cli
wheel: where ``PYTHONDONTWRITEBYTECODE`` is set (it is on the development machine), an
editable checkout would otherwise be compiled from source on every run, a cost installed
users never pay.

    python benchmarks/cli_startup.py [--repeats 15] [--torch]
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import sys
import time
from pathlib import Path


def time_once(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--torch", action="store_true", help="Also time `import torch`.")
    args = parser.parse_args()
    import cmi_cli

    package = Path(cmi_cli.__file__).parent
    if not compileall.compile_dir(package, quiet=1):
        raise SystemExit(f"could not compile {package}")

    commands = {
        "python -c 'import typer'": [sys.executable, "-c", "import typer"],
        "cmi --help": [sys.executable, "-m", "cmi_cli", "--help"],
    }
    if args.torch:
        commands["python -c 'import torch'"] = [sys.executable, "-c", "import torch"]
    for cmd in commands.values():  # warm the file cache once
        time_once(cmd)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            times[name].append(time_once(cmd))

    base = statistics.median(times["python -c 'import typer'"])
    print(f"{'command':<28} {'median':>9} {'ratio':>7}   (n={args.repeats}, interleaved)")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<28} {med * 1000:>7.0f}ms {med / base:>6.2f}x")


if __name__ == "__main__":
    main()
