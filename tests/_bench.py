"""Import a script of benchmarks/ (a folder of scripts, not a package) in a test."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextlib.contextmanager
def bench_module(name: str):
    """The module ``benchmarks/<name>.py``, with benchmarks/ on ``sys.path`` meanwhile
    (the scripts import their shared helpers as ``from _common import ...``)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))
