"""A run's logged episodes loaded back into a problem, as the run left it.

A resumed run and a finished run's pick made again both need what the episodes taught the
problem: the evaluations in its caches and, in a multi-fidelity run, the screen's calibration,
counts and best full reward (its promotion before the pick spends what the run left of its
allowance, ranked by the calibration the run ended with).
"""

from __future__ import annotations

from typing import Iterable

from haq.problem.fidelity import Scored
from haq.problem.problem import SearchProblem
from haq.runs.rundir import EpisodeRecord


def replay(problem: SearchProblem, records: Iterable[EpisodeRecord]) -> None:
    """Re-load ``records`` in log order into ``problem`` (:meth:`SearchProblem.remember`)."""
    for r in records:
        problem.remember(r.quant_policy(), Scored.from_record(r.metrics, r.reward, r.extra))


__all__ = ["replay"]
