"""HAQ's reward baseline: the agent learns from the episode reward minus a moving average of past
episode rewards, which centres the critic's targets and reduces their variance.

It is a Gymnasium wrapper, so the environment keeps reporting the raw reward (``info["reward"]``
on the last step, which is what the run logs) and only the agent sees the centred one.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn


class RewardBaseline(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """Subtract a moving average of past final rewards from each final reward.

    The first episode initializes the average with its own reward (centred reward 0); after
    that ``average ← momentum·average + (1 − momentum)·reward``, updated after subtracting.
    """

    def __init__(self, env: gym.Env[np.ndarray, np.ndarray], momentum: float) -> None:
        super().__init__(env)
        self.momentum = momentum
        self.average: float | None = None

    def step(self, action: np.ndarray) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not (terminated or truncated):
            return obs, reward, terminated, truncated, info
        value, self.average = centre(float(reward), self.average, self.momentum)
        info = {**info, "baseline": self.average}
        return obs, value, terminated, truncated, info


class VecRewardBaseline(VecEnvWrapper):
    """:class:`RewardBaseline` over a vectorized environment: the episodes that end on the same
    step are centred one after the other, in environment order (with one environment it is
    exactly :class:`RewardBaseline`)."""

    def __init__(self, venv: VecEnv, momentum: float) -> None:
        super().__init__(venv)
        self.momentum = momentum
        self.average: float | None = None

    def reset(self) -> VecEnvObs:
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        for i in np.flatnonzero(dones):
            rewards[i], self.average = centre(float(infos[i]["reward"]), self.average, self.momentum)
            infos[i] = {**infos[i], "baseline": self.average}
        return obs, rewards, dones, infos


def centre(raw: float, average: float | None, momentum: float) -> tuple[float, float]:
    """(the centred reward, the new average): the first reward starts the average (centred 0)."""
    old = raw if average is None else average
    return raw - old, momentum * old + (1.0 - momentum) * raw
