"""The dataset container every part of haq consumes, and deterministic splitting / loading."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class DataSplits:
    """Train / validation / test tensors of one dataset, inputs scaled to ``value_range``.

    ``augment`` (if any) is applied to training batches only, with a seeded generator, so
    training is reproducible. Attacks clamp to ``value_range``.
    """

    name: str
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    input_shape: tuple[int, ...]
    num_classes: int
    value_range: tuple[float, float] = (0.0, 1.0)
    augment: Augment | None = None

    def subset(self, split: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` samples of a split (all when ``n`` is None): a fixed held-out subset."""
        ds = {"train": self.train, "val": self.val, "test": self.test}[split]
        x, y = ds.tensors
        if n is None:
            return x, y
        return x[:n], y[:n]


def stratified_split(
    labels: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train / val / test with every class split in the same proportions."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        parts[0].extend(idx[:n_train])
        parts[1].extend(idx[n_train : n_train + n_val])
        parts[2].extend(idx[n_train + n_val :])
    return tuple(rng.permutation(np.asarray(p, dtype=np.int64)) for p in parts)  # type: ignore[return-value]


def make_loader(ds: TensorDataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A single-process loader with its own seeded generator (no global RNG)."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen, num_workers=0)


def iterate_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Ordered mini-batches of in-memory tensors (evaluation)."""
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size], y[i : i + batch_size]


def random_shift(max_shift: int) -> Augment:
    """Augmentation: translate each image by up to ``max_shift`` pixels (zero fill)."""

    def apply(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (max_shift,) * 4)
        dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
        out = torch.empty_like(x)
        for i in range(n):
            out[i] = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        return out

    return apply
