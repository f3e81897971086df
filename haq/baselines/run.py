"""Run one baseline on a :class:`~haq.problem.problem.SearchProblem` and write a run directory.

The baseline scores its candidates with the search's own evaluator and reward
(:meth:`SearchProblem.score`) and commits each evaluation through the run-directory core every
proposer shares (:mod:`haq.runs.checkpoint`: config.json, a state-only checkpoint, then the
episodes.jsonl line, best_policy.json kept current), so ``haq plot`` and the benchmark treat a
baseline exactly like a search. Candidates are deterministic for a given configuration, so the
log alone is enough to resume: ``resume`` skips the evaluations already in it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from haq.baselines.candidates import (
    METHODS,
    Candidate,
    greedy_candidates,
    ilp_candidates,
    random_candidates,
    uniform_candidates,
)
from haq.core.errors import ConfigError
from haq.core.types import Log
from haq.core.validate import choice, count, unit_interval
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.problem.reward_sensitivity import resolved_estimator, reward_sensitivity
from haq.problem.sensitivity import Sensitivity, SensitivityConfig
from haq.runs.candidates import log_candidates
from haq.runs.checkpoint import RunStore
from haq.runs.progress import OnProgress
from haq.runs.proposer import Proposer, RunResult
from haq.runs.replay import replay
from haq.runs.sensitivity_file import write_sensitivity


@dataclass(frozen=True)
class BaselineConfig:
    """One baseline run.

    method: ``uniform`` | ``random`` | ``greedy`` | ``ilp``.
    evaluations: most policies to evaluate (uniform, greedy and ilp may have fewer distinct ones).
    seed: seeds the random baseline's draws.
    ladder_floor: lowest fraction of the budget the greedy and ILP candidates are solved for
        (their first candidate always uses the whole budget).
    sensitivity: how greedy and ilp estimate per-layer sensitivity.
    """

    VERSION: ClassVar[int] = 1

    method: str = "ilp"
    evaluations: int = 20
    seed: int = 0
    ladder_floor: float = 0.5
    sensitivity: SensitivityConfig = field(default_factory=SensitivityConfig)

    def __post_init__(self) -> None:
        choice("baseline method", self.method, METHODS)
        count("evaluations", self.evaluations)
        count("seed", self.seed, 0)
        unit_interval("ladder_floor", self.ladder_floor)


def baseline_env(env: EnvConfig) -> EnvConfig:
    """The environment a baseline's problem is built from: baselines never map actions, so no
    action prior (whose sensitivity pass and ILP solve would be work thrown away)."""
    return dataclasses.replace(env, action_prior="uniform")


def baseline_candidates(problem: SearchProblem, cfg: BaselineConfig, sensitivity: Sensitivity | None) -> list[Candidate]:
    """The candidates ``cfg.method`` proposes (sensitivity is needed by greedy and ilp only)."""
    model, n = problem.budget_model, cfg.evaluations
    if cfg.method == "uniform":
        return uniform_candidates(model, n)
    if cfg.method == "random":
        return random_candidates(model, n, np.random.default_rng(cfg.seed), problem.config.projection)
    if sensitivity is None:
        raise ConfigError(f"baseline '{cfg.method}' needs per-layer sensitivities")
    if cfg.method == "greedy":
        return greedy_candidates(model, sensitivity, n, cfg.ladder_floor)
    return ilp_candidates(model, sensitivity, n, cfg.ladder_floor)


ALLOCATORS = ("greedy", "ilp")
"""The baselines that allocate by a per-layer sensitivity."""


def resolved(cfg: BaselineConfig, problem: SearchProblem) -> BaselineConfig:
    """``cfg`` with its sensitivity estimator resolved for the problem's reward and model (greedy
    and ilp; the others estimate none): what a run records, so it resumes under the estimator it
    used whatever ``auto`` resolves to later."""
    if cfg.method not in ALLOCATORS:
        return cfg
    estimator = resolved_estimator(problem.config, cfg.sensitivity, problem.workload)
    return dataclasses.replace(cfg, sensitivity=dataclasses.replace(cfg.sensitivity, estimator=estimator))


class BaselineStore(RunStore):
    """A baseline's run directory: state-only checkpoints (its candidates are deterministic, so
    the log alone resumes it); every setting must match on resume."""

    kind = "baseline"
    resumable = ()

    def _check_settings(self, doc: Mapping[str, Any]) -> None:
        """A run written before sensitivities could be measured: greedy and ilp used the Fisher
        estimate; the others estimate none, so theirs is what this haq records for them."""
        config = doc.get("config")
        baseline = config.get("baseline") if isinstance(config, Mapping) else None
        sensitivity = baseline.get("sensitivity") if isinstance(baseline, Mapping) else None
        if isinstance(sensitivity, dict) and isinstance(baseline, Mapping):
            sensitivity.setdefault("estimator", "fisher" if baseline.get("method") in ALLOCATORS else "auto")
        super()._check_settings(doc)


class Baseline(Proposer[BaselineStore]):
    """Evaluates ``cfg.method``'s candidates in order; sensitivities (greedy, ilp) and candidates
    are computed before anything is written, so a budget no candidate meets leaves no run behind."""

    def __init__(self, cfg: BaselineConfig) -> None:
        self.cfg = cfg
        self.sensitivity: Sensitivity | None = None
        self.sensitivity_seconds = 0.0
        self.candidates: list[Candidate] = []

    def _episodes(self) -> int:
        return self.cfg.evaluations

    def _open(self, problem: SearchProblem, out_dir: str | Path) -> BaselineStore:
        self.cfg = resolved(self.cfg, problem)
        return BaselineStore(out_dir, {"env": problem.config, "baseline": self.cfg})

    def _prepare(self, problem: SearchProblem, store: BaselineStore, log: Log | None) -> None:
        start = time.perf_counter()
        if self.cfg.method in ALLOCATORS:
            self.sensitivity = reward_sensitivity(
                problem.config, problem.workload, self.cfg.sensitivity, log, problem.pool, problem.sensitivity_store
            )
            if log:
                log(f"sensitivity: {self.sensitivity.estimator} estimate of {len(self.sensitivity.layers)} layers")
        self.sensitivity_seconds = time.perf_counter() - start
        self.candidates = baseline_candidates(problem, self.cfg, self.sensitivity)
        if not self.candidates:
            raise ConfigError(f"baseline '{self.cfg.method}' proposed no policy within the budget")

    def _propose(self, problem: SearchProblem, store: BaselineStore, progress: OnProgress | None, log: Log | None) -> None:
        if self.sensitivity is not None:
            write_sensitivity(store.path, self.sensitivity)
        replay(problem, store.records)
        todo = self.candidates[len(store.records) :]
        log_candidates(problem, store, todo, store.commit, len(self.candidates), progress)

    def _details(self) -> dict[str, Any]:
        estimator = None if self.sensitivity is None else self.sensitivity.estimator
        return {"sensitivity_seconds": self.sensitivity_seconds, "sensitivity_estimator": estimator}


def run_baseline(
    cfg: BaselineConfig,
    problem: SearchProblem,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: OnProgress | None = None,
    log: Log | None = None,
) -> RunResult:
    """Propose, evaluate and log the baseline's candidates; ``records`` holds every evaluation."""
    return Baseline(cfg).run(problem, out_dir, resume=resume, progress=progress, log=log)
