"""stable-baselines3 agents set up for the bit-width search, and saving / loading them for reuse.

Credit assignment: the reward arrives only at the last step of an episode. HAQ copies it to
every transition with γ = 1. We get the same targets without rewriting the replay buffer:
γ = 1 and n-step returns with n = episode length (stable-baselines3's ``NStepReplayBuffer``),
so every transition's return is exactly the episode's final reward and the critic does not
have to bootstrap through a chain of zero rewards. PPO uses γ = 1, λ = 1 (Monte-Carlo returns)
with one episode per rollout.

Off-policy agents learn from the action the environment applied after budget projection
(:class:`AppliedActionReplayBuffer`); PPO, whose update needs the log-probability of the
sampled action, learns from the request (its outcome is a deterministic function of it).

Off-policy agents (DDPG, TD3, SAC) train once per finished episode, on as many minibatches as
the episode had steps; the first ``warmup_episodes`` episodes act uniformly at random (SB3's
``learning_starts``). DDPG and TD3 explore with :class:`~haq.search.noise.DecayingTruncatedNormalNoise`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import gymnasium as gym
import numpy as np
from stable_baselines3 import DDPG, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import NStepReplayBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from haq.core.errors import InternalError, RunDirError
from haq.search.config import AgentConfig
from haq.search.noise import DecayingTruncatedNormalNoise


class AppliedActionReplayBuffer(NStepReplayBuffer):
    """Stores the action the environment applied (``info["applied_action"]``), not the request.

    When the budget projection lowers a request, the outcome depends only on the applied pair;
    training the critic on the request would teach it that asking for more bits is free, and
    the actor would drift to the top of the range (HAQ's replay buffer has this flaw).
    """

    def add(  # type: ignore[override]
        self, obs: np.ndarray, next_obs: np.ndarray, action: np.ndarray, reward: np.ndarray, done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        applied = [info.get("applied_action") for info in infos]
        if all(a is not None for a in applied):
            action = np.asarray(applied, dtype=action.dtype).reshape(action.shape)
        super().add(obs, next_obs, action, reward, done, infos)


ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ddpg": DDPG, "td3": TD3, "sac": SAC, "ppo": PPO}
AGENT_FILE = "agent.zip"
BUFFER_FILE = "replay_buffer.pkl"
META_FILE = "agent.json"
META_FORMAT = "haq.agent"


def make_agent(cfg: AgentConfig, env: gym.Env, episode_len: int, total_episodes: int, seed: int) -> BaseAlgorithm:
    """A fresh agent for ``env`` (whose episodes are ``episode_len`` steps long)."""
    hidden = list(cfg.hidden)
    common: dict[str, Any] = {"learning_rate": cfg.learning_rate, "gamma": 1.0, "seed": seed, "device": "cpu", "verbose": 0}
    if cfg.algo == "ppo":
        return PPO(
            "MlpPolicy", env, n_steps=episode_len, batch_size=episode_len, n_epochs=cfg.ppo_epochs, gae_lambda=1.0,
            normalize_advantage=episode_len > 1, policy_kwargs={"net_arch": {"pi": hidden, "vf": hidden}}, **common,
        )
    off_policy: dict[str, Any] = {
        "buffer_size": max(total_episodes * episode_len, 1) + 1,
        "learning_starts": cfg.warmup_episodes * episode_len,
        "batch_size": cfg.batch_size,
        "tau": cfg.tau,
        "train_freq": (1, "episode"),
        "gradient_steps": cfg.gradient_steps,
        "replay_buffer_class": AppliedActionReplayBuffer,
        "replay_buffer_kwargs": {"n_steps": episode_len, "gamma": 1.0},
        "policy_kwargs": {"net_arch": {"pi": hidden, "qf": hidden}},
    }
    if cfg.algo == "sac":
        return SAC("MlpPolicy", env, **off_policy, **common)
    dim = int(env.action_space.shape[0])  # type: ignore[index]
    noise = DecayingTruncatedNormalNoise(dim, cfg.noise_sigma, cfg.noise_decay, cfg.warmup_episodes, seed=seed)
    return ALGORITHMS[cfg.algo]("MlpPolicy", env, action_noise=noise, **off_policy, **common)


def save_agent(model: BaseAlgorithm, directory: Path, meta: Mapping[str, Any]) -> None:
    """Write the agent, its replay buffer (off-policy) and a JSON description of what it needs.

    ``meta`` should say how to rebuild its environment: observation feature names, bit range,
    reward weights, source table and model. The caller makes the directory swap atomic.
    """
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / AGENT_FILE)
    if isinstance(model, OffPolicyAlgorithm):
        model.save_replay_buffer(directory / BUFFER_FILE)
    doc = {"format": META_FORMAT, "version": 1, "algo": _algo_name(model), **dict(meta)}
    (directory / META_FILE).write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def load_agent(directory: Path, env: gym.Env, with_buffer: bool = True) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """Load an agent saved by :func:`save_agent` onto ``env``; returns it and its description."""
    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{meta_path}: cannot read the agent description ({exc}); is {directory} a saved agent?") from exc
    algo = meta.get("algo") if isinstance(meta, dict) and meta.get("format") == META_FORMAT else None
    if algo not in ALGORITHMS:
        raise RunDirError(f"{meta_path}: not a haq agent description (format '{META_FORMAT}' with algo in {', '.join(ALGORITHMS)})")
    try:
        model = ALGORITHMS[algo].load(directory / AGENT_FILE, env=env, device="cpu")
    except ValueError as exc:  # stable-baselines3 refuses observation / action spaces that differ
        raise RunDirError(f"{directory}: incompatible observation layout for this environment ({exc})") from exc
    if with_buffer and isinstance(model, OffPolicyAlgorithm) and (directory / BUFFER_FILE).is_file():
        model.load_replay_buffer(directory / BUFFER_FILE)
    return model, meta


def _algo_name(model: BaseAlgorithm) -> str:
    for name, cls in ALGORITHMS.items():
        if type(model) is cls:
            return name
    raise InternalError(f"unsupported agent type {type(model).__name__}; haq saves {', '.join(ALGORITHMS)}")
