"""Run one baseline on a :class:`~haq.problem.problem.SearchProblem` and write a run directory.

The baseline scores its candidates with the search's own evaluator and reward
(:meth:`SearchProblem.score`) and writes the search's run-directory format (config.json,
episodes.jsonl appended per evaluation, best_policy.json kept current), so ``haq plot`` and the
benchmark treat a baseline exactly like a search. Candidates are deterministic for a given
configuration, so ``resume`` simply skips the evaluations already in the log.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from haq.baselines.candidates import (
    METHODS,
    Candidate,
    greedy_candidates,
    ilp_candidates,
    random_candidates,
    uniform_candidates,
)
from haq.baselines.sensitivity import (
    Sensitivity,
    SensitivityConfig,
    estimate_sensitivity,
)
from haq.core import config as serial
from haq.core.errors import ConfigError
from haq.core.fileio import atomic_write_text
from haq.problem.problem import SearchProblem
from haq.runs.progress import SearchProgress
from haq.runs.rundir import EpisodeRecord, RunDir

Progress = Callable[[SearchProgress], None]


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

    method: str = "ilp"
    evaluations: int = 20
    seed: int = 0
    ladder_floor: float = 0.5
    sensitivity: SensitivityConfig = field(default_factory=SensitivityConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown baseline method '{self.method}'; choose one of {', '.join(METHODS)}")
        if isinstance(self.evaluations, bool) or not isinstance(self.evaluations, int) or self.evaluations < 1:
            raise ConfigError(f"evaluations must be an integer >= 1, got {self.evaluations!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not (isinstance(self.ladder_floor, (int, float)) and 0.0 < self.ladder_floor <= 1.0):
            raise ConfigError(f"ladder_floor must be in (0, 1], got {self.ladder_floor!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class BaselineResult:
    """What a baseline run produced."""

    records: list[EpisodeRecord]
    best: EpisodeRecord
    seconds: float
    sensitivity_seconds: float


def baseline_candidates(problem: SearchProblem, cfg: BaselineConfig, sensitivity: Sensitivity | None) -> list[Candidate]:
    """The candidates ``cfg.method`` proposes (sensitivity is needed by greedy and ilp only)."""
    model, n = problem.budget_model, cfg.evaluations
    if cfg.method == "uniform":
        return uniform_candidates(model, n)
    if cfg.method == "random":
        return random_candidates(model, n, np.random.default_rng(cfg.seed))
    if sensitivity is None:
        raise ConfigError(f"baseline '{cfg.method}' needs per-layer sensitivities")
    if cfg.method == "greedy":
        return greedy_candidates(model, sensitivity, n, cfg.ladder_floor)
    return ilp_candidates(model, sensitivity, n, cfg.ladder_floor)


def run_baseline(
    problem: SearchProblem, cfg: BaselineConfig, out_dir: str | Path, progress: Progress | None = None, resume: bool = False,
) -> BaselineResult:
    """Propose, evaluate and log the baseline's candidates; returns every record and the best."""
    run = RunDir(out_dir)
    settings = {"env": serial.to_dict(problem.config), "baseline": cfg.to_dict()}
    done: list[EpisodeRecord] = []
    if run.exists() or run.episodes_path.exists():
        if not resume:
            raise ConfigError(f"{run.path} already holds a run; pass --resume to continue it or choose a new --out")
        run.check_same_config(settings, ignore=())
        done = run.read_episodes()
    start = time.perf_counter()
    sensitivity = None
    if cfg.method in ("greedy", "ilp"):
        w = problem.workload
        sensitivity = estimate_sensitivity(w.model, w.layers, w.data, w.device, cfg.sensitivity)
    sensitivity_seconds = time.perf_counter() - start
    candidates = baseline_candidates(problem, cfg, sensitivity)
    if run.exists():
        run.rewrite_episodes(done)  # drops a line torn by a kill mid-write
    else:
        run.write_config(settings, kind="baseline", budget=problem.budget.to_dict(),
                         reference=problem.evaluator.reference.to_dict(), layers=problem.layer_names)
    if sensitivity is not None:
        atomic_write_text(run.path / "sensitivity.json", json.dumps(sensitivity.to_dict(), indent=2, allow_nan=False) + "\n")
    records = list(done)
    best = max(records, key=lambda r: (r.reward, -r.episode)) if records else None
    for i, cand in enumerate(candidates[len(done):], start=len(done)):
        policy = problem.policy(cand.pairs, cand.meta)
        cached = policy in problem.evaluator
        scored = problem.score(policy)
        record = EpisodeRecord(i, {n: (b.w_bits, b.a_bits) for n, b in policy.layers.items()}, scored.metrics, scored.reward, cand.meta)
        run.append_episode(record)
        records.append(record)
        if best is None or record.reward > best.reward:
            best = record
            run.write_best(record)
        if progress is not None:
            progress(SearchProgress(i, len(candidates), record.reward, best.reward, best.episode, record.metrics, cached))
    if best is None:
        raise ConfigError(f"baseline '{cfg.method}' proposed no policy within the budget")
    if not run.best_path.exists():
        run.write_best(best)
    return BaselineResult(records, best, time.perf_counter() - start, sensitivity_seconds)
