"""Reusing a trained agent: load it onto a new environment, roll it out, prepare it to fine-tune.

The observation is per-layer features scaled by fixed constants plus hardware features read
from the device table, so an actor trained on one device (or model) can act on another as is.
An agent that sets the ILP's objective (:mod:`haq.search.objective`) observes nothing: its
action re-weighs the model's estimated errors, which do not depend on the device, and the new
device's costs decode it, so it acts on the same model on another device as is.
For fine-tuning, what belonged to the old device is dropped: the replay buffer (its rewards
were earned on the old device, and its n-step horizon was the old model's length; a fresh one
of the agent's own buffer class replaces it), the
random warm-up (the actor is already trained) and the decayed exploration noise, which is
replaced by a fresh, smaller one. Actor and critic weights are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import NStepReplayBuffer, RolloutBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit
from stable_baselines3.common.vec_env import VecEnv

from envs.mixed_precision import MixedPrecisionEnv
from haq.core.errors import InternalError
from haq.evaluation.metrics import PolicyMetrics
from haq.problem.problem import SearchProblem
from haq.runs.rundir import EpisodeRecord
from haq.search.agents import load_agent, replay_capacity
from haq.search.baseline import RewardBaseline, VecRewardBaseline
from haq.search.config import WHOLE_DECISIONS, AgentConfig
from haq.search.noise import BatchNoise, DecayingTruncatedNormalNoise
from haq.search.run import AgentEnv
from haq.search.whole_policy import DECODED


def load_on(checkpoint: Path, env: gym.Env | VecEnv) -> BaseAlgorithm:
    """The saved agent, attached to ``env`` (no replay buffer); a space mismatch is one line."""
    return load_agent(checkpoint, env, with_buffer=False)[0]


@dataclass(frozen=True)
class ActingEnv:
    """The environment a saved agent acts through for one episode, and its reward baseline (if
    the agent trains with one): one layer per step, or the search's own one-step stack for an
    agent that decides the whole policy (whose decoder, if any, reads the problem's costs)."""

    env: gym.Env | VecEnv
    baseline: RewardBaseline | VecRewardBaseline | None

    @classmethod
    def build(cls, problem: SearchProblem, agent: AgentConfig) -> ActingEnv:
        """The environment of a resolved ``agent`` (:meth:`AgentConfig.for_problem`) on ``problem``."""
        if agent.decision in WHOLE_DECISIONS:
            stack = AgentEnv.build(problem, agent, 1)
            return cls(stack.agent_env, stack.baseline)
        env = MixedPrecisionEnv(problem=problem)
        baseline = RewardBaseline(env, agent.baseline_momentum) if agent.uses_baseline else None
        return cls(baseline if baseline is not None else env, baseline)

    def rollout(self, model: BaseAlgorithm, episode: int, extra: dict[str, Any] | None = None) -> EpisodeRecord:
        """One deterministic episode of ``model`` here (:func:`rollout` or :func:`rollout_whole`)."""
        if isinstance(self.env, VecEnv):
            return rollout_whole(model, self.env, episode, extra)
        return rollout(model, self.env, episode, extra)


def rollout(model: BaseAlgorithm, env: gym.Env, episode: int, extra: dict[str, Any] | None = None) -> EpisodeRecord:
    """One deterministic episode of the actor on ``env`` (the zero-shot policy), as a log record.

    ``env`` is the environment or the wrapper the agent trains through (the reward baseline),
    so a wrapper sees the episode as it would during training.
    """
    obs, _ = env.reset(seed=0)
    done = False
    info: dict[str, Any] = {}
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, _, done, _, info = env.step(action)
    return _record(info, episode, extra)


def rollout_whole(model: BaseAlgorithm, venv: VecEnv, episode: int, extra: dict[str, Any] | None = None) -> EpisodeRecord:
    """:func:`rollout` of an agent that decides the whole policy in one step
    (:class:`~haq.search.whole_policy.VecWholePolicy`), through its stack of one environment."""
    if venv.num_envs != 1:
        raise InternalError(f"a zero-shot rollout runs one episode, not {venv.num_envs} at once")
    action, _ = model.predict(venv.reset(), deterministic=True)
    _, _, _, infos = venv.step(action)
    decoded = {DECODED: infos[0][DECODED]} if DECODED in infos[0] else {}
    return _record(infos[0], episode, {**(extra or {}), **decoded})


def _record(info: dict[str, Any], episode: int, extra: dict[str, Any] | None) -> EpisodeRecord:
    """The log record of the episode whose last step returned ``info``."""
    policy = {n: (int(w), int(a)) for n, (w, a) in info["policy"].items()}
    return EpisodeRecord(episode, policy, PolicyMetrics.from_dict(info["metrics"]), float(info["reward"]), extra or {})


def prepare_finetune(
    model: BaseAlgorithm,
    episode_len: int,
    episodes: int,
    noise_sigma: float,
    noise_decay: float,
    seed: int,
    batch: int = 1,
    gradient_steps: int | None = None,
) -> None:
    """Reset what belonged to the old device so ``learn`` fine-tunes on the new one (in place),
    ``batch`` episodes at a time (``gradient_steps`` per episode; ``None`` keeps the agent's)."""
    obs_space, act_space = model.observation_space, model.action_space
    if isinstance(model, OffPolicyAlgorithm):
        model.learning_starts = 0
        model.buffer_size = replay_capacity(episodes, episode_len, batch)
        model.replay_buffer_kwargs = {"n_steps": episode_len, "gamma": 1.0}
        buffer_cls = model.replay_buffer_class if issubclass(model.replay_buffer_class, NStepReplayBuffer) else NStepReplayBuffer
        model.replay_buffer = buffer_cls(
            model.buffer_size,
            obs_space,
            act_space,
            device=model.device,
            n_envs=batch,
            n_steps=episode_len,
            gamma=1.0,
        )
        one_round = TrainFreq(1, TrainFrequencyUnit.EPISODE) if batch == 1 else TrainFreq(episode_len, TrainFrequencyUnit.STEP)
        model.train_freq = one_round  # one update round per batch of episodes
        if gradient_steps is not None:
            model.gradient_steps = gradient_steps * batch if gradient_steps > 0 else gradient_steps
        if model.action_noise is not None:
            dim = int(act_space.shape[0])  # type: ignore[index]
            model.action_noise = (
                DecayingTruncatedNormalNoise(dim, noise_sigma, noise_decay, 0, seed=seed)
                if batch == 1
                else BatchNoise.fresh(dim, noise_sigma, noise_decay, 0, batch, seed=seed)
            )
            # A search's learn() advances a fresh noise once as it starts; the fine-tuning continues
            # this saved agent, so its noise is advanced here to start where a search's would.
            model.action_noise.reset()
    elif isinstance(model, PPO):
        model.n_steps = episode_len
        model.batch_size = episode_len
        model.normalize_advantage = episode_len > 1
        model.rollout_buffer = RolloutBuffer(
            episode_len,
            obs_space,
            act_space,
            device=model.device,
            gamma=1.0,
            gae_lambda=1.0,
            n_envs=batch,
        )
    else:
        raise InternalError(f"cannot fine-tune a {type(model).__name__} agent; haq trains ddpg, td3, sac and ppo")
