"""ImageNet-style preprocessing of one decoded image, written on Pillow and numpy (no torchvision).

Evaluation: resize so the image covers the target divided by ``crop_fraction`` (256 for a
224 crop), center crop, scale to [0, 1], normalize per channel. Training: a random-resized crop
(Szegedy et al. 2015: 8–100 % of the area, aspect 3/4–4/3) resized to the target, and a
horizontal flip with probability 1/2, then the same scaling and normalization. Every random
draw comes from the generator the caller passes, so augmentation is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from haq.core import validate
from haq.core.errors import DataError
from haq.data.space import InputRange

CROP_FRACTION = 0.875
"""Center crop / resized side, the ImageNet convention (224 / 256)."""
SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)


def pillow() -> Any:
    """``PIL.Image``, or a :class:`DataError` saying how to install it."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise DataError("image folders need Pillow: pip install 'haq[images]'") from exc
    return Image


@dataclass(frozen=True)
class Preprocess:
    """How one image file becomes a model input of shape ``(channels, height, width)``."""

    channels: int
    height: int
    width: int
    value_range: InputRange
    crop_fraction: float = CROP_FRACTION

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise DataError(f"image folders decode to 1 (grey) or 3 (RGB) channels, not {self.channels}")
        validate.count("image height", self.height)
        validate.count("image width", self.width)
        validate.unit_interval("crop fraction", self.crop_fraction)

    def open(self, path: Path) -> Any:
        """The decoded image in this preprocessing's colour mode (a one-line error if it cannot be)."""
        image = pillow()
        try:
            with image.open(path) as img:
                return img.convert("L" if self.channels == 1 else "RGB")
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot decode image ({exc})") from exc

    def evaluate(self, path: Path) -> torch.Tensor:
        """Resize to cover, center crop, normalize."""
        img = self.open(path)
        w, h = img.size
        s = max(self.height / self.crop_fraction / h, self.width / self.crop_fraction / w)
        cw, ch = self.width / s, self.height / s  # the crop in source pixels
        box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
        return self._tensor(img.resize((self.width, self.height), pillow().BILINEAR, box=box))

    def train(self, path: Path, rng: np.random.Generator) -> torch.Tensor:
        """Random-resized crop and random horizontal flip, then normalize."""
        img = self.open(path)
        left, top, cw, ch = random_resized_box(img.size, rng)
        out = img.resize((self.width, self.height), pillow().BILINEAR, box=(left, top, left + cw, top + ch))
        x = self._tensor(out)
        return torch.flip(x, dims=(2,)) if rng.random() < 0.5 else x

    def _tensor(self, img: Any) -> torch.Tensor:
        arr = np.asarray(img, dtype=np.float32) / 255.0
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        x = torch.from_numpy(np.ascontiguousarray(arr))
        return self.value_range.from_pixels(x[None])[0]


def random_resized_box(size: tuple[int, int], rng: np.random.Generator, attempts: int = 10) -> tuple[int, int, int, int]:
    """``(left, top, width, height)`` of a crop covering 8–100 % of the area at aspect 3/4–4/3;
    a central crop at the nearest allowed aspect when ten draws do not fit."""
    w, h = size
    area = w * h
    for _ in range(attempts):
        target = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    ratio = w / h
    if ratio < RATIO[0]:
        cw, ch = w, int(round(w / RATIO[0]))
    elif ratio > RATIO[1]:
        cw, ch = int(round(h * RATIO[1])), h
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch
