"""The ``bench/`` scripts as modules for their tests: imported with ``bench/`` on ``sys.path``, as
when they run (they import each other by name)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str) -> ModuleType:
    """``bench/<name>.py`` imported (``sys.path`` restored afterwards)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCH))
        return importlib.import_module(name)
