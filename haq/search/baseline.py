"""HAQ's reward baseline: the agent learns from the episode reward minus a moving average of past
episode rewards, which centres the critic's targets and reduces their variance.

It is a Gymnasium wrapper, so the environment keeps reporting the raw reward (``info["reward"]``
on the last step, which is what the run logs) and only the agent sees the centred one.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np


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
        raw = float(reward)
        if self.average is None:
            self.average = raw
        centred = raw - self.average
        self.average = self.momentum * self.average + (1.0 - self.momentum) * raw
        info = {**info, "baseline": self.average}
        return obs, centred, terminated, truncated, info
