"""A transfer run: zero-shot rollout of a trained agent on a new device, then fine-tuning.

The run directory has the search's format (``haq.runs.rundir``) with ``kind: "transfer"``
and a ``transfer`` section (the :class:`TransferConfig` and the source run), so ``haq plot``,
the benchmarks and a later transfer (``--from`` this run) read it like any search.

Episode 0 is the zero-shot episode: the source actor, deterministic, on the new device's
environment. Its record and the prepared agent are checkpointed exactly as a search
checkpoints an episode (agent, ``state.json``; then the log line), and the fine-tuning episodes
1..N are the search loop itself (:func:`haq.search.run.run_search`) resumed from that
checkpoint. So crash-safety and ``--resume`` are the search's: no gap, no duplicate.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from envs.mixed_precision import MixedPrecisionEnv
from haq.core import config as serial
from haq.core.errors import ConfigError
from haq.core.fileio import atomic_write_text
from haq.core.types import Log
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import ReferenceMetrics
from haq.problem.budget import Budget
from haq.problem.config import BudgetConfig, EnvConfig
from haq.problem.problem import SearchProblem, build_problem
from haq.quant import LayerInfo
from haq.runs.progress import SearchProgress
from haq.runs.rundir import EpisodeRecord, RunDir
from haq.search.agents import save_agent
from haq.search.baseline import RewardBaseline
from haq.search.config import SearchConfig
from haq.search.run import CHECKPOINT_PREFIX, agent_description, run_search
from haq.transfer.agent import load_on, prepare_finetune, rollout
from haq.transfer.config import TransferConfig
from haq.transfer.source import SourceRun, latest_checkpoint, load_source
from haq.workload import WorkloadConfig

RUN_KIND = "transfer"
ZERO_SHOT = "zero-shot"
ProgressFn = Callable[[SearchProgress], None]


@dataclass(frozen=True)
class TransferResult:
    """What a transfer run produced: the zero-shot episode, the best after fine-tuning, the target's layers."""

    run_dir: Path
    source: SourceRun
    zero_shot: EpisodeRecord
    best: EpisodeRecord
    episodes_done: int
    resumed_from: int
    budget: Budget
    reference: ReferenceMetrics
    layers: tuple[LayerInfo, ...]


def target_env_config(source: EnvConfig, cfg: TransferConfig) -> EnvConfig:
    """The source's environment with the new device (and model / budget / evaluator if given)."""
    workload = source.workload
    if cfg.model is not None or cfg.dataset is not None:
        model = cfg.model or workload.model
        same_model = model == workload.model
        workload = WorkloadConfig(
            model=model, dataset=cfg.dataset or (workload.dataset if same_model else None), data_root=workload.data_root,
            checkpoint=workload.checkpoint if same_model else None, seed=workload.seed,
            train_epochs=workload.train_epochs if same_model else None,
        )
    budget = source.budget
    if cfg.budget_ratio is not None or cfg.budget_absolute is not None:
        budget = BudgetConfig(metric=budget.metric, ratio=cfg.budget_ratio or budget.ratio, absolute=cfg.budget_absolute)
    elif budget.absolute is not None and budget.metric != "size" and cfg.table != source.table:
        raise ConfigError(
            f"the source run's budget is absolute ({budget.absolute:g} {budget.metric} units on {source.table}), which means "
            f"nothing on {cfg.table}; pass --budget RATIO or --budget-absolute VALUE for the new device"
        )
    evaluation: EvalConfig = source.evaluation
    if cfg.evaluator is not None:
        evaluation = dataclasses.replace(evaluation, kind=cfg.evaluator)
    return dataclasses.replace(source, workload=workload, table=cfg.table, budget=budget, evaluation=evaluation)


def fine_tune_config(source: SearchConfig, cfg: TransferConfig) -> SearchConfig:
    """The search settings the fine-tuning runs under (episode 0 is the zero-shot one)."""
    agent = dataclasses.replace(source.agent, warmup_episodes=0, noise_sigma=cfg.noise_sigma, noise_decay=cfg.noise_decay)
    return SearchConfig(env=target_env_config(source.env, cfg), agent=agent, episodes=cfg.episodes + 1, seed=cfg.seed)


def run_transfer(
    cfg: TransferConfig,
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    cache_dir: Path | None = None,
    resume: bool = False,
    log: Log | None = None,
    problem: SearchProblem | None = None,
) -> TransferResult:
    """Transfer ``cfg.source``'s agent to ``cfg.table``: zero-shot episode, then ``cfg.episodes`` of fine-tuning.

    ``problem`` reuses an already-built target problem (benchmarks); it must match the derived
    environment config. Errors (not a search run, a table that cannot cost a layer, a budget
    the new device cannot meet, another observation layout) are raised before anything is written.
    """
    source = load_source(cfg.source)
    search_cfg = fine_tune_config(source.config, cfg)
    rd = RunDir(out_dir)
    if rd.path.resolve() == source.path.resolve():
        raise ConfigError(f"--out {rd.path} is the source run itself; write the transfer to another directory")
    if rd.exists():
        if not resume:
            raise ConfigError(f"{rd.path} already holds a run; pass --resume to continue it or choose another --out")
        _check_same_transfer(rd, cfg)
    if problem is None:
        problem = build_problem(search_cfg.env, cache_dir, log, feedback_cache=rd.path / "measured_latency.json")
    elif problem.config != search_cfg.env:
        raise ConfigError("the given problem was built from a different environment config than this transfer derives")
    if not rd.exists():
        rd.write_config(
            serial.to_dict(search_cfg), kind=RUN_KIND, budget=problem.budget.to_dict(), reference=problem.evaluator.reference.to_dict(),
            layers=problem.layer_names, transfer={"config": cfg.to_dict(), "source": source.describe()},
        )
    resuming = latest_checkpoint(rd) is not None
    if not resuming:
        _zero_shot(rd, source, search_cfg, problem, progress, log)
    result = run_search(search_cfg, rd.path, progress, cache_dir, resume=True, log=log if resuming else None, problem=problem)
    zero = rd.read_episodes()[0]
    return TransferResult(
        rd.path, source, zero, result.best, result.episodes_done, result.resumed_from if resuming else 0, result.budget, result.reference,
        tuple(problem.workload.layers),
    )


def _zero_shot(
    rd: RunDir, source: SourceRun, search_cfg: SearchConfig, problem: SearchProblem,
    progress: ProgressFn | None, log: Log | None,
) -> None:
    """Roll the source actor out on the new device; checkpoint it as episode 0, then log it."""
    env = MixedPrecisionEnv(problem=problem)
    agent_env = RewardBaseline(env, search_cfg.agent.baseline_momentum) if search_cfg.agent.reward_baseline else env
    model = load_on(source.checkpoint, agent_env)
    if log:
        log(f"zero-shot: {source.meta.get('algo')} agent from {source.path} ({source.model} on {source.table}) "
            f"on {search_cfg.env.workload.model} / {problem.table.name}")
    record = rollout(model, env, 0, {"phase": ZERO_SHOT, "source_table": source.table, "source_model": source.model})
    agent = search_cfg.agent
    prepare_finetune(model, env.num_layers, search_cfg.episodes, agent.noise_sigma, agent.noise_decay, search_cfg.seed)
    state = {"episodes_done": 1, "last_record": record.to_json(), "baseline": record.reward if agent.reward_baseline else None}
    _checkpoint(rd, model, agent_description(problem, search_cfg), state)
    rd.rewrite_episodes([record])
    rd.write_best(record)
    if progress is not None:
        progress(SearchProgress(0, search_cfg.episodes, record.reward, record.reward, 0, record.metrics, False))


def _checkpoint(rd: RunDir, model: Any, description: dict[str, Any], state: dict[str, Any]) -> None:
    """The search's checkpoint layout (``checkpoint/ep-<episodes done>``: agent + state.json), swapped in atomically."""
    final = rd.checkpoint_dir / f"{CHECKPOINT_PREFIX}{state['episodes_done']:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_agent(model, tmp, description)
    atomic_write_text(tmp / "state.json", json.dumps(state) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _check_same_transfer(rd: RunDir, cfg: TransferConfig) -> None:
    """Refuse to resume a directory written by another kind of run or another transfer."""
    doc = rd.read_config()
    if doc.get("kind") != RUN_KIND:
        raise ConfigError(f"cannot resume {rd.path} as a transfer: it holds a '{doc.get('kind')}' run; choose another --out")
    stored = doc.get("transfer", {}).get("config", {})
    current = cfg.to_dict()
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key), current.get(key)
        if key == "source" and isinstance(old, str):
            old, new = str(Path(old).resolve()), str(Path(new).resolve())
        if key != "episodes" and old != new:
            raise ConfigError(
                f"cannot resume {rd.path}: it was written with {key}={old!r}, this transfer has {key}={new!r}; "
                "use a new --out or the same settings"
            )
