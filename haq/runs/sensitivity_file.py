"""The per-layer sensitivity a run allocated by, kept in its run directory: ``auto`` resolves to
the Fisher or the measured estimate per reward and model, so a reader of the run needs the file
to know which error model its policies came from (the baselines' greedy and ILP, a search's
objective agent or action prior). The same file, one per estimate, is what the sensitivity cache
keeps (:class:`SensitivityCache`), so later runs on the same model and reward skip the estimate."""

from __future__ import annotations

import json
import re
from pathlib import Path

from haq.core import jsonio
from haq.core.errors import DataError, HaqError, InternalError
from haq.core.fileio import atomic_write_text
from haq.core.types import Log
from haq.problem.sensitivity import Sensitivity

SENSITIVITY_FILE = "sensitivity.json"
SENSITIVITY_VERSION = 1
"""Version of ``sensitivity.json``: ``version``, then :meth:`Sensitivity.to_dict`'s fields."""
KEY = re.compile(r"[0-9a-f]{32}")
"""What :func:`haq.problem.sensitivity_store.sensitivity_key` gives: a cache file's name, never a path."""


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


class SensitivityCache:
    """Sensitivity estimates as files in ``directory`` (``<cache>/sensitivity``), one per key.

    Best effort both ways, since the cache only saves time: an unreadable file is named in the log
    and estimated again (then replaced), and a directory that cannot be written loses the entry,
    not the run. Files appear by atomic rename, so two runs estimating at once both read whole
    files and write the same figures.
    """

    def __init__(self, directory: Path, log: Log | None = None) -> None:
        self.directory = directory
        self.log = log

    def path(self, key: str) -> Path:
        """The file of ``key`` (a digest, checked: a key never names a path)."""
        if not KEY.fullmatch(key):
            raise InternalError(f"sensitivity cache key {key!r} is not a 32-digit hex digest")
        return self.directory / f"{key}.json"

    def get(self, key: str) -> Sensitivity | None:
        """The estimate kept under ``key``, or ``None`` (absent or unreadable, which is logged)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return read_sensitivity(path)
        except HaqError as exc:
            if self.log:
                self.log(f"warning: ignoring the cached sensitivity ({exc}); estimating it again")
            return None

    def put(self, key: str, sensitivity: Sensitivity) -> None:
        """Keep ``sensitivity`` under ``key``; a failure to write is logged, not raised."""
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_sensitivity(path.parent, sensitivity, path.name)
        except OSError as exc:
            if self.log:
                self.log(f"warning: could not keep the sensitivity estimate in {path.parent} ({exc.strerror or exc}); it is not reused")


__all__ = ["SENSITIVITY_FILE", "SENSITIVITY_VERSION", "SensitivityCache", "read_sensitivity", "write_sensitivity"]
