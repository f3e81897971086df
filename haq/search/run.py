"""The search run: an agent, the environment and the run directory, resumable after any crash.

Ordering that makes resume exact: when an episode finishes, the callback first writes a new
checkpoint (agent, replay buffer, and a state file holding that episode's record) into a fresh
directory and renames it into place, and only then appends the episode to ``episodes.jsonl``.
A kill at any point leaves either the previous checkpoint and log (the episode is re-run) or
the new checkpoint with the log one line short (the line is restored from the checkpoint), so
the log never has a gap or a duplicate. Gradient updates happen after the checkpoint, so a
resumed run can miss at most one episode's worth of updates, never an episode.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger

from envs.mixed_precision import OBS_FEATURES, MixedPrecisionEnv
from haq.core import config as serial
from haq.core.errors import ConfigError
from haq.core.fileio import atomic_write_text
from haq.core.types import Log
from haq.evaluation.evaluators import PolicyMetrics, ReferenceMetrics
from haq.problem.budget import Budget
from haq.problem.problem import SearchProblem, build_problem
from haq.runs.progress import SearchProgress
from haq.runs.rundir import EpisodeRecord, RunDir
from haq.search.agents import load_agent, make_agent, save_agent
from haq.search.baseline import RewardBaseline
from haq.search.config import SearchConfig

ProgressFn = Callable[[SearchProgress], None]
CHECKPOINT_PREFIX = "ep-"


@dataclass(frozen=True)
class SearchResult:
    """Where the run is, how far it got, and its best episode."""

    run_dir: Path
    episodes_done: int
    resumed_from: int
    best: EpisodeRecord
    budget: Budget
    reference: ReferenceMetrics


def run_search(
    config: SearchConfig,
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    cache_dir: Path | None = None,
    resume: bool = False,
    log: Log | None = None,
    problem: SearchProblem | None = None,
) -> SearchResult:
    """Search bit widths with ``config.agent`` for ``config.episodes`` episodes, logging to ``out_dir``.

    ``resume`` continues a run in ``out_dir`` written with the same settings (``episodes`` may
    grow); without it an existing run there is an error. ``problem`` reuses a built problem.
    """
    rd = RunDir(out_dir)
    if rd.exists() and not resume:
        raise ConfigError(f"{rd.path} already holds a search run; pass --resume to continue it or choose another --out")
    if rd.exists():
        rd.check_same_config(serial.to_dict(config))
    problem = problem or build_problem(config.env, cache_dir, log, feedback_cache=rd.path / "measured_latency.json")
    if problem.config != config.env:
        raise ConfigError("the given problem was built from a different environment config than the search config")
    env = MixedPrecisionEnv(problem=problem)
    agent_env = RewardBaseline(env, config.agent.baseline_momentum) if config.agent.uses_baseline else env
    episode_len = env.num_layers
    checkpoint = _latest_checkpoint(rd) if rd.exists() else None
    state = json.loads((checkpoint / "state.json").read_text()) if checkpoint else {"episodes_done": 0}
    records = _reconcile(rd, state)
    for r in records:
        problem.evaluator.remember(r.quant_policy(), r.metrics)
    done = len(records)
    if not rd.exists():
        rd.write_config(
            serial.to_dict(config), budget=problem.budget.to_dict(), reference=problem.evaluator.reference.to_dict(),
            layers=problem.layer_names,
        )
    if checkpoint is not None:
        model, _ = load_agent(checkpoint, agent_env)
        model.set_random_seed(config.seed + done)
        if isinstance(agent_env, RewardBaseline):
            agent_env.average = state.get("baseline")
        if log:
            log(f"resuming {rd.path} after {done} of {config.episodes} episodes")
    else:
        model = make_agent(config.agent, agent_env, episode_len, config.episodes, config.seed)
    best = max(records, key=lambda r: (r.reward, -r.episode)) if records else None
    logger = _EpisodeLogger(rd, problem, config, agent_env, done, best, progress)
    remaining = config.episodes - done
    if remaining > 0:
        # A logger with no outputs: SB3's default creates an empty /tmp/SB3-<time> folder per learn().
        model.set_logger(Logger(folder=None, output_formats=[]))
        model.learn(total_timesteps=remaining * episode_len, callback=logger, reset_num_timesteps=checkpoint is None)
    if logger.best is None:
        raise ConfigError(f"search in {rd.path} finished without any episode")
    return SearchResult(rd.path, logger.next_index, done, logger.best, problem.budget, problem.evaluator.reference)


def agent_description(problem: SearchProblem, config: SearchConfig) -> dict[str, Any]:
    """What a saved agent needs to be reused on another device or model (issue 6)."""
    env = problem.config
    settings = serial.to_dict(config)
    return {
        "observation": {"version": "v0", "features": list(OBS_FEATURES), "scaling": "fixed constants, clipped to [0, 1]"},
        "min_bits": env.min_bits,
        "max_bits": env.max_bits,
        "pin_first_last": env.pin_first_last,
        "reward": settings["env"]["reward"],
        "budget": settings["env"]["budget"],
        "source_table": problem.table.name,
        "source_model": env.workload.model,
        "agent": settings["agent"],
    }


class _EpisodeLogger(BaseCallback):
    """Collects each finished episode and, at the end of its rollout, checkpoints then logs it."""

    def __init__(
        self, rd: RunDir, problem: SearchProblem, config: SearchConfig, agent_env: gym.Env,
        next_index: int, best: EpisodeRecord | None, progress: ProgressFn | None,
    ) -> None:
        super().__init__()
        self.rd = rd
        self.config = config
        self.agent_env = agent_env
        self.next_index = next_index
        self.best = best
        self.progress = progress
        self.description = agent_description(problem, config)
        self._pending: tuple[EpisodeRecord, bool] | None = None

    def _on_step(self) -> bool:
        if not self.locals["dones"][0]:
            return True
        info = self.locals["infos"][0]
        policy = {n: (int(w), int(a)) for n, (w, a) in info["policy"].items()}
        record = EpisodeRecord(self.next_index, policy, PolicyMetrics.from_dict(info["metrics"]), float(info["reward"]))
        self._pending = (record, bool(info["cached"]))
        return True

    def _on_rollout_end(self) -> None:
        if self._pending is None:
            return
        record, cached = self._pending
        self._pending = None
        self._checkpoint(record)
        self.rd.append_episode(record)
        self.next_index += 1
        if self.best is None or record.reward > self.best.reward:
            self.best = record
            self.rd.write_best(record)
        if self.progress is not None:
            self.progress(SearchProgress(
                record.episode, self.config.episodes, record.reward, self.best.reward, self.best.episode, record.metrics, cached,
            ))

    def _checkpoint(self, record: EpisodeRecord) -> None:
        model: BaseAlgorithm = self.model
        final = self.rd.checkpoint_dir / f"{CHECKPOINT_PREFIX}{record.episode + 1:06d}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_agent(model, tmp, self.description)
        state = {
            "episodes_done": record.episode + 1,
            "last_record": record.to_json(),
            "baseline": getattr(self.agent_env, "average", None),
        }
        atomic_write_text(tmp / "state.json", json.dumps(state) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in self.rd.checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)


def _latest_checkpoint(rd: RunDir) -> Path | None:
    """The newest complete checkpoint directory (``.tmp`` ones were interrupted)."""
    done = [p for p in rd.checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*") if not p.name.endswith(".tmp") and (p / "state.json").is_file()]
    return max(done, key=lambda p: p.name) if done else None


def _reconcile(rd: RunDir, state: dict[str, Any]) -> list[EpisodeRecord]:
    """Make episodes.jsonl agree with the checkpoint: exactly ``episodes_done`` lines, 0..k-1."""
    k = int(state["episodes_done"])
    records = [r for r in rd.read_episodes() if r.episode < k]
    if len(records) == k - 1 and "last_record" in state:
        records.append(EpisodeRecord.from_json(state["last_record"], "checkpoint state"))
    if [r.episode for r in records] != list(range(k)):
        raise ConfigError(f"{rd.episodes_path} does not match the checkpoint ({len(records)} usable lines for {k} episodes); start a new run")
    if rd.episodes_path.is_file() and rd.episodes_path.read_text() != "".join(r.to_json() + "\n" for r in records):
        rd.rewrite_episodes(records)
    return records
