"""HAQ's exploration noise as a stable-baselines3 ActionNoise: truncated normal, decaying per episode.

σ stays at ``sigma`` through the warm-up episodes and then decays geometrically,
σ_k = sigma · decay^(k − warmup) after episode k. Samples are truncated at ±``truncate``·σ so a
single draw cannot throw the action across the whole range (HAQ truncates to the action bounds;
stable-baselines3 clips to [-1, 1] after adding the noise).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import truncnorm
from stable_baselines3.common.noise import ActionNoise


class DecayingTruncatedNormalNoise(ActionNoise):
    """Per-episode decaying, truncated Gaussian noise; ``reset`` (called at each episode end) advances it."""

    def __init__(self, dim: int, sigma: float, decay: float, warmup_episodes: int, truncate: float = 2.0, seed: int = 0) -> None:
        super().__init__()
        self.dim = dim
        self.sigma = sigma
        self.decay = decay
        self.warmup_episodes = warmup_episodes
        self.truncate = truncate
        self.episodes = 0
        self._rng = np.random.default_rng(seed)

    @property
    def current_sigma(self) -> float:
        """σ for the episode in progress."""
        return self.sigma * self.decay ** max(0, self.episodes - self.warmup_episodes)

    def __call__(self) -> np.ndarray:
        sigma = self.current_sigma
        if sigma <= 0:
            return np.zeros(self.dim, dtype=np.float32)
        draw = truncnorm.rvs(-self.truncate, self.truncate, size=self.dim, random_state=self._rng)
        return (sigma * draw).astype(np.float32)

    def reset(self) -> None:
        self.episodes += 1

    def __repr__(self) -> str:
        return (
            f"DecayingTruncatedNormalNoise(sigma={self.sigma}, decay={self.decay}, "
            f"warmup={self.warmup_episodes}, episodes={self.episodes})"
        )
