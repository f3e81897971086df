"""Evaluators that measure on images other than the search's: a range of the validation or test
split handed to an evaluator in the role of its validation images.

A run's final pick re-scores its best policies on images the search never saw and reports the
chosen one on the test split (:mod:`haq.problem.select`). The in-process path and the worker
pool (:mod:`haq.parallel`) both build those evaluators here, from the same workload, table and
settings, so a policy gets the same metrics wherever it is scored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch.utils.data import Subset

from haq.core.errors import DataError
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import QuantizingEvaluator, build_evaluator
from haq.tables.protocols import DeviceTable
from haq.workload import Workload

SPLITS = ("test", "val")
"""The held-out splits an evaluator may measure on (never ``train``)."""


@dataclass(frozen=True)
class Images:
    """Images ``start`` to ``stop`` (exclusive) of the workload's ``split``."""

    split: str
    start: int
    stop: int

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise DataError(f"image split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if not 0 <= self.start < self.stop:
            raise DataError(f"image range needs 0 <= start < stop, got {self.start}:{self.stop}")

    @property
    def count(self) -> int:
        """How many images the range holds."""
        return self.stop - self.start

    def __str__(self) -> str:
        return f"{self.split}[{self.start}:{self.stop}]"


def held_out_evaluator(
    workload: Workload, table: DeviceTable, evaluation: EvalConfig, kind: str, images: Images, seed: int | None = None
) -> QuantizingEvaluator:
    """The evaluator ``kind`` (``evaluation``'s settings) measuring on ``images``: all of them for
    accuracy, the first ``robust_samples`` of them under attack. Latency and energy are priced
    from ``table``. ``seed`` seeds its randomness (DQ fine-tune, calibration, attack starts) in
    place of the workload's (``None``): one policy's reward moves with it, and a report under
    several seeds says how much of a reward was that draw."""
    if seed is not None:
        workload = dataclasses.replace(workload, config=dataclasses.replace(workload.config, seed=seed))
    split = workload.data.split(images.split)
    available = len(split)  # type: ignore[arg-type]
    if images.stop > available:
        raise DataError(f"{images} asks for images beyond the {available} of the {images.split} split")
    view = split if images.start == 0 else Subset(split, range(images.start, images.stop))  # it reads the first count
    cfg = dataclasses.replace(
        evaluation, kind=kind, val_samples=images.count, robust_samples=min(evaluation.robust_samples, images.count)
    )
    return build_evaluator(dataclasses.replace(workload, data=dataclasses.replace(workload.data, val=view)), table, cfg)


__all__ = ["SPLITS", "Images", "held_out_evaluator"]
