"""Accuracy gate of the model-registry workflow: may the new model replace the current one?

usage: python deploy/accuracy_gate.py NEW.json CURRENT.json [--max-drop 0.01]

Both files are `cmi evaluate --json` outputs on the same split of the same data. Exits 0 when
the new model's mIoU is at most --max-drop below the current one's, 1 when it is worse, 2 when
the two were not scored on the same data and split (a comparison that means nothing). Prints one
line a job summary can show. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _load(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"accuracy gate: cannot read {path}: {exc}") from None
    if not isinstance(record.get("miou"), (int, float)):
        raise SystemExit(f"accuracy gate: {path} has no mIoU (is it a `cmi evaluate --json`?)")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", type=Path)
    parser.add_argument("current", type=Path)
    parser.add_argument("--max-drop", type=float, default=0.01, help="mIoU points (0-1 scale)")
    args = parser.parse_args(argv)
    new, current = _load(args.new), _load(args.current)
    for key in ("split", "num_images"):
        if new.get(key) != current.get(key):
            print(f"accuracy gate: not comparable: {key} {new.get(key)!r} vs {current.get(key)!r}")
            return 2
    delta = new["miou"] - current["miou"]
    verdict = "pass" if delta >= -args.max_drop else "FAIL"
    print(
        f"accuracy gate: {verdict}: mIoU {new['miou']:.4f} (new) vs {current['miou']:.4f} "
        f"(current) on {new['split']} ({new['num_images']} images), delta {delta:+.4f}, "
        f"allowed drop {args.max_drop:.4f}"
    )
    return 0 if verdict == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
