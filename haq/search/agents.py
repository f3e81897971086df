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

Off-policy agents (DDPG, TD3, SAC) train once per finished batch of episodes (one episode, or
one per environment of a vectorized search), ``gradient_steps`` minibatches per episode; the
first ``warmup_episodes`` episodes act uniformly at random (SB3's
``learning_starts``). DDPG and TD3 explore with :class:`~haq.search.noise.DecayingTruncatedNormalNoise`.

A saved agent (a checkpoint, or one shared for transfer) is data, never pickles: a description
(``agent.json``), the agent's state (:mod:`haq.search.snapshot`: hyperparameters and RNG states
as JSON, weights as tensors, the replay buffer as arrays) and a manifest of SHA-256 hashes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import NStepReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from haq.core import jsonio
from haq.core.errors import RunDirError
from haq.core.fileio import atomic_write_text
from haq.runs.manifest import verify_manifest, write_manifest
from haq.runs.tracking import quiet_logger
from haq.search.config import PORTFOLIO, AgentConfig
from haq.search.noise import BatchNoise, DecayingTruncatedNormalNoise
from haq.search.snapshot import (
    ALGORITHMS,
    STATE_FILE,
    WEIGHTS_FILE,
    TrainingState,
    algo_name,
    policy_kwargs,
    read_snapshot,
    write_snapshot,
)


class AppliedActionReplayBuffer(NStepReplayBuffer):
    """Stores the action the environment applied (``info["applied_action"]``), not the request.

    When the budget projection lowers a request, the outcome depends only on the applied pair;
    training the critic on the request would teach it that asking for more bits is free, and
    the actor would drift to the top of the range (HAQ's replay buffer has this flaw).
    """

    def add(  # type: ignore[override]
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        applied = [info.get("applied_action") for info in infos]
        if all(a is not None for a in applied):
            action = np.asarray(applied, dtype=action.dtype).reshape(action.shape)
        super().add(obs, next_obs, action, reward, done, infos)


META_FILE = "agent.json"
META_FORMAT = "haq.agent"
META_VERSION = 2
"""Version 1 described an ``agent.zip`` (stable-baselines3's pickling ``save``); 2 describes the
agent as data (:mod:`haq.search.snapshot`)."""
AGENT_FILES = (META_FILE, STATE_FILE, WEIGHTS_FILE)
"""What every saved agent holds (off-policy agents add their replay buffer, ``buffer.npz``)."""


def replay_capacity(episodes: int, episode_len: int, n: int = 1) -> int:
    """Replay buffer size of a run of ``episodes`` episodes collected ``n`` at a time: every
    transition, never wrapping (stable-baselines3 gives each of the ``n`` environments an equal share)."""
    return n * (max(-(-episodes // n) * episode_len, 1) + 1)


def make_agent(cfg: AgentConfig, env: gym.Env, episode_len: int, total_episodes: int, seed: int) -> BaseAlgorithm:
    """A fresh agent for ``env`` (whose episodes are ``episode_len`` steps long); ``cfg``'s automatic
    choices are resolved by the caller (:meth:`AgentConfig.for_problem`), else they mean "no prior"
    (and a decision of several agents, ``auto`` or ``portfolio``, this one agent on ``env``).
    It logs nowhere until its caller sets a logger (a search sets the run directory's)."""
    if cfg.decision in ("auto", PORTFOLIO):
        cfg = dataclasses.replace(cfg, decision="layer")
    model = _new_agent(cfg.for_problem(False), env, episode_len, total_episodes, seed)
    model.set_logger(quiet_logger())
    return model


def _new_agent(cfg: AgentConfig, env: gym.Env, episode_len: int, total_episodes: int, seed: int) -> BaseAlgorithm:
    """The algorithm ``cfg`` names, built for ``env``."""
    hidden = list(cfg.hidden)
    common: dict[str, Any] = {"learning_rate": cfg.learning_rate, "gamma": 1.0, "seed": seed, "device": "cpu", "verbose": 0}
    if cfg.algo == "ppo":
        ppo = PPO(
            "MlpPolicy",
            env,
            n_steps=episode_len,
            batch_size=episode_len,
            n_epochs=cfg.ppo_epochs,
            gae_lambda=1.0,
            normalize_advantage=episode_len > 1,
            policy_kwargs=policy_kwargs(PPO, {"pi": hidden, "vf": hidden}),
            **common,
        )
        return start_at_centre(ppo, cfg) if cfg.start_at_centre else ppo
    n = env.num_envs if isinstance(env, VecEnv) else 1
    off_policy: dict[str, Any] = {
        "buffer_size": replay_capacity(total_episodes, episode_len, n),
        "learning_starts": cfg.warmup_episodes * episode_len,
        "batch_size": cfg.batch_size,
        "tau": cfg.tau,
        # one update round per batch of n episodes (stable-baselines3 counts episodes only with one environment)
        "train_freq": (1, "episode") if n == 1 else (episode_len, "step"),
        "gradient_steps": cfg.gradient_steps * n if cfg.gradient_steps > 0 else cfg.gradient_steps,
        "replay_buffer_class": AppliedActionReplayBuffer,
        "replay_buffer_kwargs": {"n_steps": episode_len, "gamma": 1.0},
        "policy_kwargs": policy_kwargs(ALGORITHMS[cfg.algo], {"pi": hidden, "qf": hidden}),
    }
    dim = int(env.action_space.shape[0])  # type: ignore[index]
    if cfg.algo == "sac":
        target = "auto" if cfg.target_entropy is None else cfg.target_entropy * dim
        sac = SAC("MlpPolicy", env, ent_coef=f"auto_{cfg.ent_coef_init:g}", target_entropy=target, **off_policy, **common)
        return start_at_centre(sac, cfg) if cfg.start_at_centre else sac
    active = min(1.0, cfg.noise_layers / episode_len) if cfg.noise_layers > 0 else 1.0
    quiet = 1 if cfg.start_at_centre else 0  # a centred agent's first policy is the prior itself
    extra = {"shift": cfg.noise_shift, "active": active, "quiet": quiet, "reheat": cfg.noise_reheat}
    noise: ActionNoise = (
        DecayingTruncatedNormalNoise(dim, cfg.noise_sigma, cfg.noise_decay, cfg.warmup_episodes, seed=seed, **extra)
        if n == 1
        else BatchNoise.fresh(dim, cfg.noise_sigma, cfg.noise_decay, cfg.warmup_episodes, n, seed=seed, **extra)
    )
    agent = ALGORITHMS[cfg.algo]("MlpPolicy", env, action_noise=noise, **off_policy, **common)
    return start_at_centre(agent, cfg) if cfg.start_at_centre else agent


def hold_actor(model: BaseAlgorithm, hold: bool) -> None:
    """Keep an off-policy agent's actor where it is (``hold``) or let it learn again: its weights
    stop requiring gradients, so the actor's optimizer step and the target's Polyak update leave
    it unchanged while the critic goes on learning from the same minibatches. Agents without an
    ``actor`` (PPO) are left alone."""
    actor = getattr(model, "actor", None)
    if isinstance(actor, nn.Module):
        for p in actor.parameters():
            p.requires_grad_(not hold)


def set_actor_every(model: BaseAlgorithm, every: int | None) -> None:
    """Update a DDPG / TD3 actor once per ``every`` critic updates (TD3's policy delay; ``None``
    keeps the algorithm's own). Set at every training start, since DDPG does not save it."""
    if every is not None and isinstance(model, TD3):
        model.policy_delay = every


@torch.no_grad()
def start_at_centre(model: BaseAlgorithm, cfg: AgentConfig) -> BaseAlgorithm:
    """Zero the actor's output layer so its first policy is action 0 everywhere (the environment's
    centre), with SAC's / PPO's log std set to ``cfg.initial_log_std``; the layer still learns,
    because its inputs (the hidden features) are not zero."""
    if isinstance(model, SAC):
        out = model.actor.mu
        model.actor.log_std.weight.zero_()
        model.actor.log_std.bias.fill_(cfg.initial_log_std)
    elif isinstance(model, PPO):
        out = model.policy.action_net
        model.policy.log_std.fill_(cfg.initial_log_std)
    else:
        out = [m for m in model.actor.mu if isinstance(m, nn.Linear)][-1]
    out.weight.zero_()
    out.bias.zero_()
    target = getattr(model, "actor_target", None)
    if target is not None:
        target.load_state_dict(model.actor.state_dict())
    return model


def save_agent(model: BaseAlgorithm, directory: Path, meta: Mapping[str, Any]) -> None:
    """Write the agent as data (:mod:`haq.search.snapshot`), its description and a manifest.

    ``meta`` should say how to rebuild its environment: observation feature names, bit range,
    reward weights, source table and model. The caller makes the directory swap atomic.
    """
    directory.mkdir(parents=True, exist_ok=True)
    write_snapshot(model, directory)
    doc = {**dict(meta), "format": META_FORMAT, "version": META_VERSION, "algo": algo_name(model)}
    atomic_write_text(directory / META_FILE, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    write_manifest(directory)


def load_agent(directory: Path, env: gym.Env, with_buffer: bool = True) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """Load an agent saved by :func:`save_agent` onto ``env``; returns it and its description."""
    model, meta, _ = restore_agent(directory, env, with_buffer)
    return model, meta


def restore_agent(
    directory: Path,
    env: gym.Env,
    with_buffer: bool = True,
    capacity: int | None = None,
) -> tuple[BaseAlgorithm, dict[str, Any], TrainingState]:
    """:func:`load_agent` plus the RNG and noise states that continue its training exactly;
    ``capacity`` grows the replay buffer to hold that many transitions (see :func:`replay_capacity`).

    Nothing is unpickled: the directory's files must match its manifest, the algorithm is
    constructed from the saved hyperparameters and the weights, optimizer states and replay
    buffer are loaded as tensors and arrays. Anything else is one :class:`RunDirError` line.
    """
    verify_manifest(directory, "saved agent")
    meta = read_description(directory)
    model, training = read_snapshot(directory, env, with_buffer, AppliedActionReplayBuffer, capacity)
    if algo_name(model) != meta["algo"]:
        raise RunDirError(f"{directory / META_FILE}: describes a {meta['algo']} agent; {STATE_FILE} holds a {algo_name(model)}")
    return model, meta, training


def read_description(directory: Path) -> dict[str, Any]:
    """A saved agent's description (``agent.json``), with its header checked."""
    meta_path = directory / META_FILE
    meta = jsonio.read_json(meta_path, "agent description", error=RunDirError)
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise RunDirError(f"{meta_path}: not a haq agent description (format '{META_FORMAT}')")
    if meta.get("version") != META_VERSION:
        raise RunDirError(
            f"{meta_path}: an agent of format version {meta.get('version')!r}; this haq reads version {META_VERSION} "
            "(agents as data, never pickles): retrain it with this haq"
        )
    if meta.get("algo") not in ALGORITHMS:
        raise RunDirError(f"{meta_path}: 'algo' must be one of {', '.join(ALGORITHMS)}")
    return meta
