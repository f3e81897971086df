"""Helpers for tests that compare run directories: a run's log without its wall times, a search
stopped from its progress callback, as a kill after a committed episode would stop it, and a
problem whose evaluator cache starts empty."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import pytest

from haq.evaluation.evaluators import CachedEvaluator
from haq.problem.problem import SearchProblem
from haq.runs.progress import Progress
from haq.search.config import SearchConfig
from haq.search.run import run_search


def episode_log(run: Path) -> list[dict[str, object]]:
    """The run's episode log without ``eval_seconds`` (wall time, the one field two identical runs differ in)."""
    lines = (run / "episodes.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "eval_seconds"} for line in lines]


class Interrupted(Exception):
    """Ends a run from its progress callback, as a kill would (after an episode was committed)."""


def interrupted(run: Callable[[Callable[[Progress], None]], object], after: int) -> None:
    """Call ``run(progress)`` (a search, a transfer) and stop it once episode ``after`` is committed."""

    def stop(p: Progress) -> None:
        if p.episode == after:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(stop)


def interrupted_search(cfg: SearchConfig, problem: SearchProblem, out: Path, after: int) -> None:
    """Run ``cfg`` on ``problem`` into ``out`` and stop it once episode ``after`` is committed."""
    interrupted(lambda stop: run_search(cfg, problem, out, progress=stop), after)


def with_empty_cache(problem: SearchProblem) -> SearchProblem:
    """``problem`` with a new, empty evaluator cache around the same evaluator (no result of an
    earlier run to look up)."""
    return dataclasses.replace(problem, evaluator=CachedEvaluator(problem.evaluator._inner))  # noqa: SLF001 - the cache's evaluator
