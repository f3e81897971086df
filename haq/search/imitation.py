"""Self-imitation for a centred DDPG / TD3 agent: the actor also learns to repeat the run's best
episodes.

The actor's loss becomes TD3+BC's (Fujimoto & Gu, 2021), with the run's own best episodes as the
data set to stay near (self-imitation, Oh et al., 2018):

    loss = −Q(s, π(s))  +  w · mean |Q(s_e, π(s_e))| · mean ‖π(s_e) − a_e‖²

where ``(s_e, a_e)`` are every step of the ``AgentConfig.imitation_episodes`` highest-reward
episodes logged so far (their observations and the actions the environment applied) and ``w``
is ``AgentConfig.imitation`` (TD3+BC writes it ``1 / α``). Scaling by ``|Q|`` makes ``w``
independent of the reward's units, as in TD3+BC. The term's gradient is added to the actor's
before each of its optimizer steps (a step pre-hook,
:meth:`torch.optim.Optimizer.register_step_pre_hook`), so every path that updates the agent
(stable-baselines3's loop, an update deferred while the next batch is scored, the update a
resume owes) updates it the same way; an actor held still (``actor_delay``) is left alone.

Why: a critic fitted to a few dozen noisy rewards has slopes that point anywhere, and the actor
follows them. MobileNetV2 (Bit Fusion, budget 0.5, cheap evaluator, 300 episodes, seeds 0-2):
once released, the centred agent's actor left the prior's neighbourhood (rewards around −1.1)
for allocations that collapse the network (below −5; −9 is chance accuracy) in 96 / 58 / 21 %
of the run's episodes (median reward −8.3 / −5.4 / −1.8); with this term, in 12 / 8 / 9 %. The
elite is part of the checkpoint, so a resumed search imitates what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from torch.utils.hooks import RemovableHandle

from haq.core.errors import RunDirError

ELITE = "elite"
"""Key of the checkpoint state holding the elite episodes."""


@dataclass(frozen=True)
class EliteEpisode:
    """One logged episode's steps: its observations (steps × observation size) and the actions
    the environment applied (steps × action size)."""

    episode: int
    reward: float
    observations: np.ndarray
    actions: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "episode": self.episode,
            "reward": self.reward,
            "observations": self.observations.tolist(),
            "actions": self.actions.tolist(),
        }


class EliteEpisodes:
    """The ``size`` highest-reward episodes seen (the earlier one on ties)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.episodes: list[EliteEpisode] = []
        self._steps: tuple[np.ndarray, np.ndarray] | None = None

    def offer(self, episode: EliteEpisode) -> None:
        """Keep ``episode`` if it is among the best ``size``."""
        self.episodes = sorted([*self.episodes, episode], key=lambda e: (-e.reward, e.episode))[: self.size]
        self._steps = None

    def steps(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Every elite step as (observations, actions), or None while there is none; joined once
        per change of the elite, not at every actor step that reads it."""
        if not self.episodes:
            return None
        if self._steps is None:
            observations = np.concatenate([e.observations for e in self.episodes])
            self._steps = observations, np.concatenate([e.actions for e in self.episodes])
        return self._steps

    def to_state(self) -> list[dict[str, Any]]:
        """The checkpoint's record of the elite (JSON)."""
        return [e.to_dict() for e in self.episodes]

    @classmethod
    def from_state(cls, size: int, doc: object, where: str) -> EliteEpisodes:
        """The elite a checkpoint recorded (``None``: empty); a malformed record is one line naming ``where``."""
        elite = cls(size)
        if doc is None:
            return elite
        if not isinstance(doc, list):
            raise RunDirError(f"{where}: '{ELITE}' must be a list of episodes, got {type(doc).__name__}")
        for row in doc:
            elite.offer(_episode(row, where))
        return elite


def _episode(row: object, where: str) -> EliteEpisode:
    bad = RunDirError(
        f"{where}: each '{ELITE}' entry needs an integer 'episode', a finite 'reward' and "
        "equal-length tables of finite 'observations' and 'actions'"
    )
    if not isinstance(row, Mapping):
        raise bad
    episode, reward = row.get("episode"), row.get("reward")
    if isinstance(episode, bool) or not isinstance(episode, int):
        raise bad
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not np.isfinite(reward):
        raise bad
    try:
        obs = np.asarray(row.get("observations"), dtype=np.float32)
        actions = np.asarray(row.get("actions"), dtype=np.float32)
    except (TypeError, ValueError):
        raise bad from None
    if obs.ndim != 2 or actions.ndim != 2 or len(obs) != len(actions):
        raise bad
    if not (np.isfinite(obs).all() and np.isfinite(actions).all()):
        raise bad
    return EliteEpisode(episode, float(reward), obs, actions)


class EpisodeTraces:
    """The steps of the episodes in flight, one per environment of a vectorized search."""

    def __init__(self) -> None:
        self._steps: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}

    def add(self, env: int, observation: np.ndarray, action: Sequence[float]) -> None:
        """Record one step of environment ``env``: the observation acted on and the applied action."""
        self._steps.setdefault(env, []).append((np.array(observation, dtype=np.float32), np.asarray(action, dtype=np.float32)))

    def finish(self, env: int, episode: int, reward: float) -> EliteEpisode:
        """Environment ``env``'s finished episode, its trace cleared."""
        steps = self._steps.pop(env, [])
        return EliteEpisode(episode, reward, np.stack([s for s, _ in steps]), np.stack([a for _, a in steps]))


class SelfImitation:
    """Adds the behaviour-cloning term of the module docstring to a DDPG / TD3 actor's steps."""

    def __init__(self, elite: EliteEpisodes, weight: float) -> None:
        self.elite = elite
        self.weight = weight
        self._model: TD3 | None = None
        self._handle: RemovableHandle | None = None

    def install(self, model: BaseAlgorithm) -> None:
        """Hook ``model``'s actor optimizer (agents without a DDPG / TD3 actor are left alone)."""
        self.uninstall()
        if isinstance(model, TD3):
            self._model = model
            self._handle = model.actor.optimizer.register_step_pre_hook(self._before_step)

    def uninstall(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle, self._model = None, None

    def _before_step(self, _optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        model = self._model
        data = self.elite.steps()
        if model is None or data is None or not any(p.requires_grad for p in model.actor.parameters()):
            return
        obs = torch.as_tensor(data[0], device=model.device)  # no copy on the CPU
        target = torch.as_tensor(data[1], device=model.device)
        with torch.enable_grad():
            acted = model.actor(obs)
            with torch.no_grad():
                scale = model.critic.q1_forward(obs, acted).abs().mean()
            loss = self.weight * scale * F.mse_loss(acted, target)
            loss.backward()


__all__ = ["ELITE", "EliteEpisode", "EliteEpisodes", "EpisodeTraces", "SelfImitation"]
