"""Fixtures of the zoo tests: the serving helpers, reached from this folder too."""

from __future__ import annotations

import sys
from pathlib import Path

# The live-server helpers live with the serving tests; the zoo chain ends in `cmi serve`.
_SERVING = str(Path(__file__).resolve().parents[1] / "serving")
if _SERVING not in sys.path:
    sys.path.insert(0, _SERVING)
