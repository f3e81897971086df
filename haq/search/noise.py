"""HAQ's exploration noise as a stable-baselines3 ActionNoise: truncated normal, decaying per episode.

σ stays at ``sigma`` through the warm-up episodes and then decays geometrically,
σ_k = sigma · decay^(k − warmup) after episode k.

With ``reheat`` set, an episode whose policy the run had proposed before (the search tells the
noise, :meth:`DecayingTruncatedNormalNoise.mark_repeat`) multiplies σ by ``reheat`` instead of
``decay``, up to ``sigma``. Why: a repeated policy's score is a cached lookup that teaches the
agent nothing and still counts as one of the run's evaluations; a centred DDPG agent whose σ had
decayed proposed its own deterministic policy again and again (ResNet-20, 300 evaluations: 48-65
distinct policies, 4-17 in the last 150). Like the one-fifth success rule of evolution
strategies, σ then settles where repeats are rare: where a repeat's rise balances the decay of
the new policies between repeats (decay 0.98, reheat 2: one repeat in about 35 episodes).

Samples are truncated at ±``truncate``·σ so a single draw cannot throw the action across the
whole range (HAQ truncates to the action bounds; stable-baselines3 clips to [-1, 1] after adding
the noise).

With ``active`` < 1 each step's per-layer draw is applied only with that probability (a
centred agent moves about ``active`` × layers layers per episode: a local search that changes a
few layers at a time instead of every layer of a 50-layer network at once).

The first ``quiet`` episodes get no noise at all: a centred agent's first policy is then its
own deterministic action, the prior itself, so it learns from the prior's real reward before it
learns from perturbations of it. They count episodes that drew noise, not resets:
stable-baselines3 also resets the noise when ``learn`` starts.

An optional episode ``shift`` (std ``shift``, same decay and truncation) is drawn once per
episode and added at every layer: correlated exploration that moves the whole policy up or
down the cost curve, which independent per-layer draws almost never do over twenty layers.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from scipy.stats import truncnorm
from stable_baselines3.common.noise import ActionNoise, VectorizedActionNoise


class DecayingTruncatedNormalNoise(ActionNoise):
    """Per-episode decaying, truncated Gaussian noise; ``reset`` (called at each episode end) advances it."""

    def __init__(
        self,
        dim: int,
        sigma: float,
        decay: float,
        warmup_episodes: int,
        truncate: float = 2.0,
        seed: int = 0,
        shift: float = 0.0,
        active: float = 1.0,
        quiet: int = 0,
        reheat: float | None = None,
    ) -> None:
        super().__init__()
        self.active = active
        self.reheat = reheat
        self.scale = 1.0  # σ / sigma for the episode in progress
        self._repeat = False  # whether the episode in progress repeated a policy
        self.quiet = quiet
        self._drawn = False  # whether the episode in progress asked for noise
        self.dim = dim
        self.sigma = sigma
        self.decay = decay
        self.warmup_episodes = warmup_episodes
        self.truncate = truncate
        self.shift = shift
        self.episodes = 0
        self._rng = np.random.default_rng(seed)
        self._shift_draw = self._draw_shift()

    @property
    def current_sigma(self) -> float:
        """σ for the episode in progress."""
        return self.sigma * self.scale

    def mark_repeat(self) -> None:
        """The episode in progress proposed a policy its run had proposed before (read at :meth:`reset`)."""
        self._repeat = True

    def __call__(self) -> np.ndarray:
        sigma = self.current_sigma
        self._drawn = True
        if sigma <= 0 or self.quiet > 0:
            return np.zeros(self.dim, dtype=np.float32)
        draw = truncnorm.rvs(-self.truncate, self.truncate, size=self.dim, random_state=self._rng)
        if self.active < 1.0 and self._rng.random() >= self.active:
            draw = np.zeros(self.dim)
        shift = self.shift * self.scale * self._shift_draw
        return (sigma * draw + shift).astype(np.float32)

    def reset(self) -> None:
        self.episodes += 1
        if self.episodes > self.warmup_episodes:
            if self._repeat and self.reheat is not None:
                self.scale = min(1.0, self.scale * self.reheat)
            else:
                self.scale *= self.decay
        if self._drawn and self.quiet > 0:
            self.quiet -= 1
        self._drawn = False
        self._repeat = False
        self._shift_draw = self._draw_shift()

    def _draw_shift(self) -> np.ndarray:
        """This episode's standardized shift (no draw without a shift, so such runs keep their stream)."""
        if self.shift <= 0:
            return np.zeros(self.dim)
        return np.asarray(truncnorm.rvs(-self.truncate, self.truncate, size=self.dim, random_state=self._rng), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """The whole state as JSON-ready data (a checkpoint stores it instead of pickling the object)."""
        return {
            "dim": self.dim,
            "sigma": self.sigma,
            "decay": self.decay,
            "warmup_episodes": self.warmup_episodes,
            "truncate": self.truncate,
            "shift": self.shift,
            "active": self.active,
            "quiet": self.quiet,
            "reheat": self.reheat,
            "drawn": self._drawn,
            "repeat": self._repeat,
            "episodes": self.episodes,
            "scale": self.scale,
            "rng": self._rng.bit_generator.state,
            "shift_draw": [float(x) for x in self._shift_draw],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DecayingTruncatedNormalNoise":
        """The noise :meth:`to_dict` described; a malformed description raises ``ValueError``."""
        try:
            noise = cls(
                _int(data["dim"]),
                _float(data["sigma"]),
                _float(data["decay"]),
                _int(data["warmup_episodes"]),
                _float(data["truncate"]),
                shift=_float(data.get("shift", 0.0)),
                active=_float(data.get("active", 1.0)),
                quiet=_int(data.get("quiet", 0)),
                reheat=None if data.get("reheat") is None else _float(data["reheat"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"exploration noise needs dim, sigma, decay, warmup_episodes, truncate ({exc})") from None
        noise.restore(data)
        return noise

    def restore(self, data: Mapping[str, Any]) -> None:
        """Set the episode count and the generator's state from :meth:`to_dict`'s data (in place)."""
        try:
            episodes, state = _int(data["episodes"]), data["rng"]
            rng = np.random.default_rng()
            rng.bit_generator.state = state
            shift_draw = np.array([_float(x) for x in data.get("shift_draw", [0.0] * self.dim)], dtype=np.float64)
            drawn, repeat = data.get("drawn", False), data.get("repeat", False)
            if not isinstance(drawn, bool) or not isinstance(repeat, bool):
                raise ValueError(f"drawn and repeat must be true or false, got {drawn!r}, {repeat!r}")
            # a state from before σ was kept as a scale: the pure schedule it followed
            scale = _float(data.get("scale", self.decay ** max(0, episodes - self.warmup_episodes)))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"exploration noise state is malformed ({type(exc).__name__}: {exc})") from None
        if episodes < 0 or self.dim < 1 or shift_draw.shape != (self.dim,) or not 0.0 <= scale <= 1.0:
            raise ValueError(
                "exploration noise needs dim >= 1, episodes >= 0, a scale in [0, 1] and one shift per action dimension"
            )
        self.episodes, self._rng, self._shift_draw, self._drawn = episodes, rng, shift_draw, drawn
        self._repeat, self.scale = repeat, scale

    def __repr__(self) -> str:
        return (
            f"DecayingTruncatedNormalNoise(sigma={self.sigma}, decay={self.decay}, "
            f"warmup={self.warmup_episodes}, episodes={self.episodes})"
        )


class BatchNoise(VectorizedActionNoise):
    """One :class:`DecayingTruncatedNormalNoise` per environment of a batch of episodes.

    stable-baselines3 would deep-copy one noise per environment, generator included, so every
    episode of a batch would get the same draws; :meth:`fresh` seeds copy ``k`` with ``seed + k``.
    Each copy counts only its own episodes, so it decays by ``decay ** n`` per episode and warms
    up for ``warmup / n`` episodes: σ follows the same schedule in the run's total episodes.
    """

    def __init__(self, noises: list[DecayingTruncatedNormalNoise]) -> None:
        super().__init__(noises[0], len(noises))
        self._noises = list(noises)  # not the ``noises`` setter: it resets (advances) every copy

    @classmethod
    def fresh(
        cls,
        dim: int,
        sigma: float,
        decay: float,
        warmup_episodes: int,
        n: int,
        seed: int = 0,
        shift: float = 0.0,
        active: float = 1.0,
        quiet: int = 0,
        reheat: float | None = None,
    ) -> "BatchNoise":
        """``n`` copies with their own generators, on the run's schedule (see the class docstring);
        the ``quiet`` first episodes are the first copy's (the same policy twice would teach nothing)."""
        warmup = -(-warmup_episodes // n)
        return cls(
            [
                DecayingTruncatedNormalNoise(
                    dim,
                    sigma,
                    decay**n,
                    warmup,
                    seed=seed + k,
                    shift=shift,
                    active=active,
                    quiet=quiet if k == 0 else 0,
                    reheat=reheat,
                )
                for k in range(n)
            ]
        )

    def mark_repeat(self, index: int) -> None:
        """Environment ``index``'s episode in progress repeated a policy of its run."""
        self._noises[index].mark_repeat()

    def to_dict(self) -> dict[str, Any]:
        """Every copy's state (:meth:`DecayingTruncatedNormalNoise.to_dict`), in environment order."""
        return {"batch": [noise.to_dict() for noise in self.noises]}

    def restore(self, data: Mapping[str, Any]) -> None:
        """Each copy's state from :meth:`to_dict`'s data (in place); ``ValueError`` if it does not fit."""
        states = data.get("batch") if isinstance(data, Mapping) else None
        if not isinstance(states, list) or len(states) != len(self.noises):
            raise ValueError(f"exploration noise of {len(self.noises)} environments needs {len(self.noises)} states")
        for noise, state in zip(self.noises, states):
            noise.restore(state)


def noise_from_dict(data: Mapping[str, Any]) -> DecayingTruncatedNormalNoise | BatchNoise:
    """The noise a ``to_dict`` of either class described; ``ValueError`` if malformed."""
    states = data.get("batch") if isinstance(data, Mapping) else None
    if states is None:
        return DecayingTruncatedNormalNoise.from_dict(data)
    if not isinstance(states, list) or not states:
        raise ValueError("a batch of exploration noises needs a non-empty list of states")
    return BatchNoise([DecayingTruncatedNormalNoise.from_dict(state) for state in states])


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)
