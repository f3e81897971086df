"""The input space of a dataset: pixel range and the per-channel normalization the model sees.

Attacks state ε in pixel units (as the papers do, e.g. 8/255 on [0, 1] images) but perturb the
model's (normalized) input; :class:`InputRange` converts between the two: a pixel radius ε is a
per-channel radius ε / std in the normalized space, and the valid inputs are the normalized
images of the pixel range, ``(low - mean) / std .. (high - mean) / std`` per channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from haq.core.errors import ConfigError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputRange:
    """Pixel values lie in ``[low, high]``; the model sees ``(pixel - mean[c]) / std[c]``.

    low / high: the pixel range (``[0, 1]`` for every haq dataset).
    mean / std: per-channel normalization; empty when the model sees pixels as they are.
    """

    low: float = 0.0
    high: float = 1.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ConfigError(f"value_range must be finite with low < high, got ({self.low}, {self.high})")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != len(self.std):
            raise ConfigError(f"normalization needs one mean and one std per channel, got {len(self.mean)} and {len(self.std)}")
        if not all(math.isfinite(m) for m in self.mean) or not all(math.isfinite(s) and s > 0 for s in self.std):
            raise ConfigError(f"normalization must have finite means and stds > 0, got mean {self.mean}, std {self.std}")

    @property
    def normalized(self) -> bool:
        """Whether the model sees normalized inputs (then bounds and radii are per channel)."""
        return bool(self.std)

    def _per_channel(self, values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        if like.dim() < 2 or like.shape[1] != len(values):
            raise ConfigError(f"inputs of shape {tuple(like.shape)} lack the {len(values)} channels this normalization has")
        shape = (1, len(values)) + (1,) * (like.dim() - 2)
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(shape)

    def bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowest and highest valid model input, broadcastable against ``like`` (N, C, ...)."""
        if not self.normalized:
            full = torch.tensor([self.low, self.high], dtype=like.dtype, device=like.device)
            return full[0], full[1]
        mean, std = self._per_channel(self.mean, like), self._per_channel(self.std, like)
        return (self.low - mean) / std, (self.high - mean) / std

    def scale(self, like: torch.Tensor) -> torch.Tensor:
        """Model-input units per pixel unit (``1 / std`` per channel; 1 without normalization)."""
        if not self.normalized:
            return torch.ones((), dtype=like.dtype, device=like.device)
        return 1.0 / self._per_channel(self.std, like)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs back to pixel values."""
        if not self.normalized:
            return x
        return x * self._per_channel(self.std, x) + self._per_channel(self.mean, x)

    def from_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel values to model inputs."""
        if not self.normalized:
            return x
        return (x - self._per_channel(self.mean, x)) / self._per_channel(self.std, x)


PIXELS = InputRange()
"""Un-normalized inputs in [0, 1] (the embedded datasets and CIFAR-10)."""


def imagenet_range(channels: int) -> InputRange:
    """ImageNet's mean / std (3 channels); a grey image uses their channel averages."""
    if channels == 3:
        return InputRange(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    if channels == 1:
        return InputRange(mean=(sum(IMAGENET_MEAN) / 3,), std=(sum(IMAGENET_STD) / 3,))
    raise ConfigError(f"image folders decode to 1 (grey) or 3 (RGB) channels, not {channels}")
