"""Make the repository's ``benchmarks`` package importable however pytest is started.

It lives at the repository root and is not installed. ``python -m pytest`` puts the root on
``sys.path``, a bare ``pytest`` does not, and Opacus installs an unrelated top-level package
called ``benchmarks`` that would then be found instead.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.find_spec("benchmarks")
if _spec is None or _spec.origin is None or Path(_spec.origin).resolve().parents[1] != ROOT:
    sys.path.insert(0, str(ROOT))
    sys.modules.pop("benchmarks", None)
