"""The per-layer sensitivity a run allocated by, kept in its run directory: ``auto`` resolves to
the Fisher or the measured estimate per reward and model, so a reader of the run needs the file
to know which error model its policies came from (the baselines' greedy and ILP, a search's
objective agent or action prior)."""

from __future__ import annotations

import json
from pathlib import Path

from haq.core.fileio import atomic_write_text
from haq.problem.sensitivity import Sensitivity

SENSITIVITY_FILE = "sensitivity.json"
SENSITIVITY_VERSION = 1
"""Version of ``sensitivity.json``: ``version``, then :meth:`Sensitivity.to_dict`'s fields."""


def write_sensitivity(run_dir: Path, sensitivity: Sensitivity) -> None:
    """Write (or replace) ``run_dir``'s record of ``sensitivity``."""
    doc = {"version": SENSITIVITY_VERSION, **sensitivity.to_dict()}
    atomic_write_text(run_dir / SENSITIVITY_FILE, json.dumps(doc, indent=2, allow_nan=False) + "\n")


__all__ = ["SENSITIVITY_FILE", "SENSITIVITY_VERSION", "write_sensitivity"]
