"""The per-layer sensitivity a run allocated by, kept in its run directory: ``auto`` resolves to
the Fisher or the measured estimate per reward and model, so a reader of the run needs the file
to know which error model its policies came from (the baselines' greedy and ILP, a search's
objective agent or action prior). The same file, one per estimate, is what the sensitivity cache
keeps (:class:`SensitivityCache`), so later runs on the same model and reward skip the estimate."""

from __future__ import annotations

import json
from pathlib import Path

from haq.core import jsonio
from haq.core.errors import DataError
from haq.core.fileio import atomic_write_text
from haq.core.types import Log
from haq.problem.sensitivity import Sensitivity
from haq.runs.digest_cache import DigestCache, Kept

SENSITIVITY_FILE = "sensitivity.json"
SENSITIVITY_VERSION = 1
"""Version of ``sensitivity.json``: ``version``, then :meth:`Sensitivity.to_dict`'s fields."""
KEPT = Kept("sensitivity", "the sensitivity estimate", "estimating it again")


def write_sensitivity(run_dir: Path, sensitivity: Sensitivity, name: str = SENSITIVITY_FILE) -> None:
    """Write (or replace) ``run_dir``'s record of ``sensitivity``."""
    doc = {"version": SENSITIVITY_VERSION, **sensitivity.to_dict()}
    atomic_write_text(run_dir / name, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def read_sensitivity(path: Path) -> Sensitivity:
    """The estimate :func:`write_sensitivity` wrote to ``path``; anything else is one
    :class:`~haq.core.errors.DataError` line naming the file."""
    doc = jsonio.read_json(path, "sensitivity file", error=DataError)
    if not isinstance(doc, dict) or doc.get("version") != SENSITIVITY_VERSION:
        found = doc.get("version") if isinstance(doc, dict) else type(doc).__name__
        raise DataError(f"sensitivity file {path}: version {found!r}, this haq reads version {SENSITIVITY_VERSION}")
    try:
        return Sensitivity.from_dict({k: v for k, v in doc.items() if k != "version"})
    except DataError as exc:
        raise DataError(f"sensitivity file {path}: {exc}") from None


class SensitivityCache(DigestCache[Sensitivity]):
    """Sensitivity estimates as files in ``directory`` (``<cache>/sensitivity``), one per key
    (:class:`~haq.runs.digest_cache.DigestCache`: best effort both ways)."""

    def __init__(self, directory: Path, log: Log | None = None) -> None:
        super().__init__(directory, KEPT, read_sensitivity, _write, log)


def _write(path: Path, sensitivity: Sensitivity) -> None:
    write_sensitivity(path.parent, sensitivity, path.name)


__all__ = ["SENSITIVITY_FILE", "SENSITIVITY_VERSION", "SensitivityCache", "read_sensitivity", "write_sensitivity"]
