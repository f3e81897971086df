"""The DQ fine-tune rates chosen per workload (:mod:`haq.problem.finetune_lr`), kept as files in
the cache so a later run on the same model, images and settings skips the probe fine-tunes:

    <cache>/finetune_lr/<key>.json   haq.finetune_lr version 1: the chosen ``lr`` and each
                                     candidate's mean accuracy reward (``scores``, by rate)

and the rate a run directory's ``config.json`` records (:func:`recorded_finetune_lr`), which a
resumed run keeps whatever the cache holds now.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from haq.core import jsonio
from haq.core.errors import DataError, RunDirError
from haq.core.fileio import atomic_write_text
from haq.core.types import Log
from haq.problem.finetune_lr import LrChoice
from haq.runs.digest_cache import DigestCache, Kept
from haq.runs.rundir import RunDir

FORMAT = "haq.finetune_lr"
VERSION = 1
KEPT = Kept("fine-tune rate", "the fine-tune rate", "measuring it again")


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


def recorded_finetune_lr(run: Path) -> float | None:
    """The DQ fine-tune rate the run in ``run`` recorded when it started (``finetune_lr`` in its
    ``config.json``), or ``None``: no run there, none recorded, or a config the resume itself will
    name as unreadable."""
    rd = RunDir(run)
    if not rd.config_path.is_file():
        return None
    try:
        lr = rd.read_config().get("finetune_lr")
    except RunDirError:
        return None
    return float(lr) if _rate(lr) else None


def _rate(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


class LrCache(DigestCache[LrChoice]):
    """Chosen rates as files in ``directory`` (``<cache>/finetune_lr``), one per key
    (:class:`~haq.runs.digest_cache.DigestCache`: best effort both ways)."""

    def __init__(self, directory: Path, log: Log | None = None) -> None:
        super().__init__(directory, KEPT, read_choice, write_choice, log)


def write_choice(path: Path, choice: LrChoice) -> None:
    """Write ``choice`` to ``path`` (atomically)."""
    doc = {"format": FORMAT, "version": VERSION, **choice.to_dict()}
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


__all__ = ["FORMAT", "VERSION", "LrCache", "read_choice", "recorded_finetune_lr", "write_choice"]
