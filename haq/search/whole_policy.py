"""The whole policy as one decision: the agent's action holds every layer's action.

HAQ's agent decides one layer per step and, with γ = 1 and whole-episode returns
(:mod:`haq.search.agents`), every step's critic target is the episode's reward. A step's critic
``Q(s_t, a_t)`` then has to learn what one layer's pair is worth on average over whatever the
later layers will be given: a marginal that 300 noisy rewards pin down poorly on a network of 20
to 50 layers. Here the agent takes one step per episode (a contextual bandit with a constant
observation) and its critic learns ``Q(a)``, the reward of the whole policy asked for, a
regression on every layer's action at once.

The step is the environment's own episode: the layers' actions go through it in order, with its
projection or repair and its evaluation, so a run logs what a per-layer run would log. The agent
learns from the actions it asked for, not the ones applied: the policy evaluated is a
deterministic function of the whole request, which the critic sees in full, so asking for more
bits than the budget allows is not free here (unlike one layer's request, which the projection
pays for with the later layers' bits, :class:`~haq.search.agents.AppliedActionReplayBuffer`).
The step's reward is the sum of the per-step rewards below it (the reward baseline's and the
cost credit's wrappers keep each episode's total).

With a ``decoder`` the agent's action is whatever the decoder reads (the ILP's objective,
:mod:`haq.search.objective`), turned into the per-layer actions the environment steps through;
with ``redraws`` too, an action whose policy repeats one of the run's is drawn again
(:mod:`haq.search.redraw`) and the replay buffer stores the action stepped.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from haq.core.errors import InternalError
from haq.core.types import BitPair
from haq.runs.final_pick import ASKED
from haq.runs.rundir import policy_json
from haq.search.redraw import Allocator, Redraws

APPLIED = "applied_action"
"""The per-layer info key the replay buffer prefers to the request; dropped from a whole-policy step."""
DECODED = "objective"
"""The info key (and episode record annotation) of the action a decoder read, when the agent has one:
what the policy was decoded from, which the per-layer actions of another device would not tell."""
REDRAWN = "redrawn"
"""The info key (and episode record annotation) of how many times an episode's action was drawn
again because its policy repeated one of the run's (absent: never)."""


class PolicyDecoder(Protocol):
    """What turns one agent action into every layer's action."""

    @property
    def action_space(self) -> spaces.Box: ...

    def layer_actions(self, action: np.ndarray) -> np.ndarray:
        """One row per layer: that layer's action in the environment."""
        ...


@runtime_checkable
class AllocatingDecoder(PolicyDecoder, Allocator, Protocol):
    """A decoder whose policy is known before stepping, so a repeat can be drawn again."""

    def encode(self, pairs: tuple[BitPair, ...]) -> np.ndarray:
        """One row per layer: the action that maps to that layer's pair."""
        ...


class VecWholePolicy(VecEnvWrapper):
    """One step per episode: the action is the ``layers`` per-layer actions of ``venv``,
    concatenated, or what ``decoder`` turns into them."""

    def __init__(self, venv: VecEnv, layers: int, decoder: PolicyDecoder | None = None, redraws: Redraws | None = None) -> None:
        inner = venv.action_space
        if not isinstance(inner, spaces.Box) or len(inner.shape) != 1:
            raise InternalError(f"a whole-policy agent needs a flat Box action per layer, got {inner}")
        self.layers = layers
        self.per_layer = int(inner.shape[0])
        self.decoder = decoder
        self.redraws = redraws
        self._allocator: AllocatingDecoder | None = None
        if redraws is not None:
            if not isinstance(decoder, AllocatingDecoder):
                raise InternalError("drawing repeats again needs a decoder whose policy is known before stepping")
            self._allocator = decoder
        tiled = spaces.Box(np.tile(inner.low, layers), np.tile(inner.high, layers), dtype=np.float32)
        action_space = decoder.action_space if decoder is not None else tiled
        observation_space = spaces.Box(1.0, 1.0, (1,), np.float32)
        super().__init__(venv, observation_space=observation_space, action_space=action_space)
        self._actions: np.ndarray | None = None
        self._decoded: np.ndarray | None = None
        self._redrawn: list[int] | None = None
        self._asked: list[tuple[BitPair, ...]] | None = None

    def _observation(self) -> np.ndarray:
        return np.ones((self.num_envs, 1), dtype=np.float32)

    def reset(self) -> VecEnvObs:
        self.venv.reset()
        return self._observation()

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions, dtype=np.float32)
        self._decoded, self._redrawn, self._asked = None, None, None
        if self.redraws is not None and self._allocator is not None:
            fresh = self.redraws.fresh(np.clip(actions, -1.0, 1.0), self._allocator)
            self._decoded, self._redrawn, self._asked = fresh.actions, fresh.counts, fresh.asked
            actions = np.stack([self._allocator.encode(p) for p in fresh.policies]).astype(np.float32)
        elif self.decoder is not None:
            self._decoded = np.clip(actions, -1.0, 1.0)
            actions = np.stack([self.decoder.layer_actions(a) for a in actions]).astype(np.float32)
        self._actions = actions.reshape(self.num_envs, self.layers, self.per_layer)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise InternalError("step_wait() without step_async()")
        actions, self._actions = self._actions, None
        total = np.zeros(self.num_envs, dtype=np.float32)
        infos: list[dict[str, Any]] = []
        dones = np.zeros(self.num_envs, dtype=bool)
        for layer in range(self.layers):
            self.venv.step_async(actions[:, layer])
            _, rewards, dones, infos = self.venv.step_wait()
            total += np.asarray(rewards, dtype=np.float32)
            if layer < self.layers - 1 and np.any(dones):
                raise InternalError(f"an episode ended after {layer + 1} of {self.layers} layers")
        if not np.all(dones):
            raise InternalError(f"an episode did not end after its {self.layers} layers")
        obs = self._observation()
        for i, info in enumerate(infos):
            info.pop(APPLIED, None)
            info["terminal_observation"] = obs[i].copy()
            if self._decoded is not None:
                info[DECODED] = [float(v) for v in self._decoded[i]]
            if self._redrawn is not None and self._decoded is not None:
                info[APPLIED] = self._decoded[i].copy()
                if self._redrawn[i]:
                    info[REDRAWN] = self._redrawn[i]
                    if self._asked is not None and self.redraws is not None:
                        info[ASKED] = policy_json(dict(zip(self.redraws.names, self._asked[i])))
        return obs, total, dones, infos


__all__ = ["APPLIED", "DECODED", "REDRAWN", "AllocatingDecoder", "PolicyDecoder", "VecWholePolicy"]
