"""The RL search: a stable-baselines3 agent proposes policies in the environment, resumable after
any crash through the run-directory core (:mod:`haq.runs.checkpoint`).

When an episode finishes, the callback commits it: a checkpoint (agent, replay buffer, and a
state holding that episode's record and the reward baseline's average) is swapped in first, the
log line is appended second. Gradient updates happen after the checkpoint, so a resumed run can
miss at most one episode's worth of updates, never an episode.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger

from envs.mixed_precision import MixedPrecisionEnv
from haq.core import config as serial
from haq.core.errors import ConfigError
from haq.core.types import Log
from haq.evaluation.metrics import PolicyMetrics
from haq.problem.problem import SearchProblem
from haq.runs.progress import OnProgress, Progress
from haq.runs.proposer import Proposer, RunResult
from haq.runs.rundir import EpisodeRecord
from haq.search.agents import make_agent
from haq.search.baseline import RewardBaseline
from haq.search.checkpoint import AgentStore, agent_description
from haq.search.config import SearchConfig


class RLSearch(Proposer[AgentStore]):
    """Searches bit widths with ``config.agent`` for ``config.episodes`` episodes."""

    def __init__(self, config: SearchConfig) -> None:
        self.config = config

    def _open(self, problem: SearchProblem, out_dir: str | Path) -> AgentStore:
        if problem.config != self.config.env:
            raise ConfigError("the given problem was built from a different environment config than the search config")
        return AgentStore(out_dir, serial.to_dict(self.config), agent_description(problem, self.config))

    def _propose(self, problem: SearchProblem, store: AgentStore, progress: OnProgress | None, log: Log | None) -> None:
        train(store, self.config, problem, progress, log)


def run_search(
    config: SearchConfig, problem: SearchProblem, out_dir: str | Path, *, resume: bool = False,
    progress: OnProgress | None = None, log: Log | None = None,
) -> RunResult:
    """Search on ``problem`` (built from ``config.env``), logging to ``out_dir``.

    ``resume`` continues a run in ``out_dir`` written with the same settings (``episodes`` may
    grow); without it an existing run there is an error.
    """
    return RLSearch(config).run(problem, out_dir, resume=resume, progress=progress, log=log)


def train(store: AgentStore, config: SearchConfig, problem: SearchProblem, progress: OnProgress | None, log: Log | None) -> None:
    """Let the agent act until ``store`` holds ``config.episodes`` episodes.

    ``store`` is restored: with a checkpoint the agent (and the reward baseline's average) are
    loaded from it, without one a fresh agent starts. The transfer calls this after committing
    its zero-shot episode, so its fine-tuning is this loop.
    """
    env = MixedPrecisionEnv(problem=problem)
    agent_env: gym.Env = RewardBaseline(env, config.agent.baseline_momentum) if config.agent.uses_baseline else env
    episode_len = env.num_layers
    for r in store.records:
        problem.evaluator.remember(r.quant_policy(), r.metrics)
    done = len(store.records)
    checkpoint = store.checkpoint
    if checkpoint is not None:
        model = store.load_agent(agent_env)
        model.set_random_seed(config.seed + done)
        if isinstance(agent_env, RewardBaseline):
            agent_env.average = checkpoint.state.get("baseline")
        if log:
            log(f"resuming {store.path} after {done} of {config.episodes} episodes")
    else:
        model = make_agent(config.agent, agent_env, episode_len, config.episodes, config.seed)
    remaining = config.episodes - done
    if remaining > 0:
        # A logger with no outputs: SB3's default creates an empty /tmp/SB3-<time> folder per learn().
        model.set_logger(Logger(folder=None, output_formats=[]))
        callback = _EpisodeLogger(store, config.episodes, agent_env, progress)
        model.learn(total_timesteps=remaining * episode_len, callback=callback, reset_num_timesteps=checkpoint is None)


class _EpisodeLogger(BaseCallback):
    """Collects each finished episode and, at the end of its rollout, commits it to the store."""

    def __init__(self, store: AgentStore, episodes: int, agent_env: gym.Env, progress: OnProgress | None) -> None:
        super().__init__()
        self.store = store
        self.episodes = episodes
        self.agent_env = agent_env
        self.progress = progress
        self._pending: tuple[EpisodeRecord, bool] | None = None

    def _on_step(self) -> bool:
        if not self.locals["dones"][0]:
            return True
        info = self.locals["infos"][0]
        policy = {n: (int(w), int(a)) for n, (w, a) in info["policy"].items()}
        record = EpisodeRecord(len(self.store.records), policy, PolicyMetrics.from_dict(info["metrics"]), float(info["reward"]))
        self._pending = (record, bool(info["cached"]))
        return True

    def _on_rollout_end(self) -> None:
        if self._pending is None:
            return
        record, cached = self._pending
        self._pending = None
        self.store.agent = self.model
        self.store.commit(record, {"baseline": getattr(self.agent_env, "average", None)})
        if self.progress is not None and self.store.best is not None:
            self.progress(Progress.after(record, self.store.best, self.episodes, cached))
