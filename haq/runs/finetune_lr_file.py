"""The DQ fine-tune rates chosen per workload (:mod:`haq.problem.finetune_lr`), kept as files in
the cache so a later run on the same model, images and settings skips the probe fine-tunes:

    <cache>/finetune_lr/<key>.json   haq.finetune_lr version 1: the chosen ``lr`` and each
                                     candidate's mean accuracy reward (``scores``, by rate)

Best effort both ways, like the sensitivity cache: an unreadable file is named in the log and the
choice measured again (then replaced); a directory that cannot be written loses the entry, not the run.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from haq.core import jsonio
from haq.core.errors import DataError, HaqError, InternalError
from haq.core.fileio import atomic_write_text
from haq.core.types import Log
from haq.problem.finetune_lr import LrChoice

FORMAT = "haq.finetune_lr"
VERSION = 1
KEY = re.compile(r"[0-9a-f]{32}")
"""What :func:`haq.problem.finetune_lr.finetune_lr_key` gives: a file's name, never a path."""


def read_choice(path: Path) -> LrChoice:
    """The choice kept in ``path``; anything else is one :class:`~haq.core.errors.DataError` line."""
    doc = jsonio.read_json(path, "fine-tune rate file", error=DataError)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise DataError(f"fine-tune rate file {path}: not a {FORMAT} version {VERSION} file")
    lr, scores = doc.get("lr"), doc.get("scores")
    if not _rate(lr) or not isinstance(scores, dict):
        raise DataError(f"fine-tune rate file {path}: 'lr' must be a number > 0 and 'scores' an object")
    try:
        parsed = {float(k): float(v) for k, v in scores.items()}
    except (TypeError, ValueError):
        raise DataError(f"fine-tune rate file {path}: 'scores' must map rates to numbers") from None
    if not all(_rate(k) and math.isfinite(v) for k, v in parsed.items()):
        raise DataError(f"fine-tune rate file {path}: 'scores' must map rates > 0 to finite numbers")
    return LrChoice(float(lr), parsed)


def _rate(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


class LrCache:
    """Chosen rates as files in ``directory`` (``<cache>/finetune_lr``), one per key."""

    def __init__(self, directory: Path, log: Log | None = None) -> None:
        self.directory = directory
        self.log = log

    def path(self, key: str) -> Path:
        """The file of ``key`` (a digest, checked: a key never names a path)."""
        if not KEY.fullmatch(key):
            raise InternalError(f"fine-tune rate cache key {key!r} is not a 32-digit hex digest")
        return self.directory / f"{key}.json"

    def get(self, key: str) -> LrChoice | None:
        """The choice kept under ``key``, or ``None`` (absent or unreadable, which is logged)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return read_choice(path)
        except HaqError as exc:
            if self.log:
                self.log(f"warning: ignoring the cached fine-tune rate ({exc}); measuring it again")
            return None

    def put(self, key: str, choice: LrChoice) -> None:
        """Keep ``choice`` under ``key``; a failure to write is logged, not raised."""
        path = self.path(key)
        doc = {"format": FORMAT, "version": VERSION, **choice.to_dict()}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
        except OSError as exc:
            if self.log:
                self.log(f"warning: could not keep the fine-tune rate in {path.parent} ({exc.strerror or exc}); it is not reused")


__all__ = ["FORMAT", "VERSION", "LrCache", "read_choice"]
