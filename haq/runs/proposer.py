"""One interface for everything that proposes bit widths (RL search, baselines, transfer) and one
result type for what a run produced.

:meth:`Proposer.run` is the single entry point (as NNCF's precision initializers share one
``apply``): it opens the run directory through the proposer's :class:`~haq.runs.checkpoint.RunStore`,
refuses what cannot run before anything is written, restores a resumed run, records the
settings, lets the proposer propose, derives ``best_policy.json`` from the log once more, and
returns a :class:`RunResult`. The proposers fill in
hooks: ``_open`` (validate, build the store), ``_prepare`` (work that may still refuse before
anything is written), ``_propose`` (the episodes), ``_derived`` and ``_details`` (what the run
directory and the result record besides the common fields).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Mapping, TypeVar

from haq.core.errors import InternalError
from haq.core.types import Log
from haq.evaluation.metrics import ReferenceMetrics
from haq.problem.budget import Budget
from haq.problem.problem import SearchProblem
from haq.runs.checkpoint import RunStore
from haq.runs.final_pick import FinalPick
from haq.runs.progress import OnProgress
from haq.runs.rundir import EXPORT_WEIGHTS, EpisodeRecord
from haq.runs.tracking import EpisodeTracker

S = TypeVar("S", bound=RunStore)


@dataclass(frozen=True)
class RunResult:
    """What a search, baseline or transfer run produced; its run directory holds the rest.

    kind: ``search`` | ``baseline`` | ``transfer`` (config.json's ``kind``).
    records: every episode in the log, 0..n-1 (a transfer's episode 0 is its zero-shot one).
    resumed_from: episodes already in the log when this call started (0 for a new run).
    seconds: wall time of this call.
    details: what only one kind reports (a baseline's ``sensitivity_seconds``, a transfer's
        ``source`` description).
    """

    run_dir: Path
    kind: str
    records: tuple[EpisodeRecord, ...]
    best: EpisodeRecord
    resumed_from: int
    budget: Budget
    reference: ReferenceMetrics
    seconds: float
    details: Mapping[str, Any] = field(default_factory=dict)
    final: FinalPick | None = None
    """The run's final pick, once one was made (:func:`haq.jobs.execute.with_pick`)."""

    @property
    def episodes_done(self) -> int:
        """Episodes (evaluated policies) in the log."""
        return len(self.records)


def fine_tune_rate(problem: SearchProblem) -> dict[str, Any]:
    """config.json's record of the DQ fine-tune rate the run's full evaluator used (chosen for the
    model when the job gave candidates: ``EvalConfig.finetune_lrs``), so ``haq evaluate --dq-lr``
    can fine-tune the chosen policy as the search did; nothing for an evaluator that does not fine-tune."""
    ev = problem.config.evaluation
    return {"finetune_lr": ev.finetune_lr} if ev.fine_tunes else {}


def weight_container(problem: SearchProblem) -> dict[str, Any]:
    """config.json's record of the container of 8-bit weights the run's costs were timed with, so
    the policies it writes are exported that way (:data:`~haq.runs.rundir.EXPORT_WEIGHTS`);
    nothing for an analytical table."""
    weights = problem.table.weight_container
    return {} if weights is None else {EXPORT_WEIGHTS: weights}


class Proposer(ABC, Generic[S]):
    """Proposes policies for a built :class:`SearchProblem` and logs each evaluation to a run
    directory through its store type ``S``."""

    def run(
        self, problem: SearchProblem, out_dir: str | Path, *, resume: bool = False,
        progress: OnProgress | None = None, log: Log | None = None,
    ) -> RunResult:
        """Run (or, with ``resume``, continue) in ``out_dir``; an existing run there is refused without it."""
        began = time.perf_counter()
        store = self._open(problem, out_dir)
        store.open(resume)
        self._prepare(problem, store, log)
        problem.plan(self._episodes())
        resumed_from = len(store.restore())
        store.start(
            budget=problem.budget.to_dict(), reference=problem.evaluator.reference.to_dict(), layers=problem.layer_names,
            **fine_tune_rate(problem), **weight_container(problem), **self._derived(problem),
        )
        with EpisodeTracker(store.path, problem.budget, log) as tracker:
            self._propose(problem, store, tracker.wrap(progress), log)
        store.finish()
        if store.best is None:
            raise InternalError(f"the {store.kind} in {store.path} finished without any episode")
        return RunResult(
            store.path, store.kind, tuple(store.records), store.best, resumed_from, problem.budget,
            problem.evaluator.reference, time.perf_counter() - began, self._details(),
        )

    @abstractmethod
    def _open(self, problem: SearchProblem, out_dir: str | Path) -> S:
        """The store for ``out_dir``, after checking that ``problem`` is the one this proposer expects."""

    @abstractmethod
    def _episodes(self) -> int:
        """The episodes the finished run logs (what a multi-fidelity screen's allowance is a fraction of)."""

    def _prepare(self, problem: SearchProblem, store: S, log: Log | None) -> None:
        """Work done before anything is written, so it may still refuse (default: none)."""

    @abstractmethod
    def _propose(self, problem: SearchProblem, store: S, progress: OnProgress | None, log: Log | None) -> None:
        """Propose, evaluate and :meth:`~RunStore.commit` episodes until the run is complete."""

    def _derived(self, problem: SearchProblem) -> dict[str, Any]:
        """Extra config.json sections (default: none)."""
        return {}

    def _details(self) -> dict[str, Any]:
        """Extra :attr:`RunResult.details` (default: none)."""
        return {}
