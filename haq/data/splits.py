"""The dataset container every part of haq consumes, and deterministic splitting / loading.

A split is any map-style dataset of ``(input, label)``: in-memory tensors for the embedded
datasets and CIFAR-10, files decoded on access (with DataLoader workers) for image folders.
Every split is a seeded permutation, so "the first n samples" is a seeded random subset: the
calibration, fine-tuning and evaluation subsets are fixed by the workload's seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset

from haq.core.errors import DataError
from haq.data.space import PIXELS, InputRange

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""Batch augmentation of in-memory training tensors: ``(x, generator) -> x``."""
Batch = tuple[torch.Tensor, torch.Tensor]
SPLITS = ("train", "val", "test")
LOAD_BATCH = 64
"""Samples decoded per loader batch when a subset is materialized."""


class AugmentedSamples(Protocol):
    """A training set that augments each sample on access from a per-sample seed (image folders)."""

    def __len__(self) -> int: ...

    def augmented(self, index: int, seed: int) -> tuple[torch.Tensor, int]: ...


@dataclass(frozen=True)
class DataSplits:
    """Train / validation / test splits of one dataset.

    input_shape: one model input (C, H, W).
    value_range: the pixel range and the normalization the model sees (attacks use it to state
        ε in pixels and to clamp to valid images).
    augment: batch augmentation of in-memory training tensors (seeded generator).
    train_augmented: per-sample augmentation of lazily decoded training files; training batches
        come from it instead of ``train`` (which is the un-augmented view, for calibration).
    workers: DataLoader worker processes for lazily decoded splits (0: decode in this process).
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    input_shape: tuple[int, ...]
    num_classes: int
    value_range: InputRange = PIXELS
    augment: Augment | None = None
    train_augmented: AugmentedSamples | None = None
    workers: int = 0
    _memo: dict[tuple[str, int | None], Batch] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def split(self, split: str) -> Dataset:
        """The dataset of ``train`` / ``val`` / ``test``."""
        if split not in SPLITS:
            raise DataError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
        return {"train": self.train, "val": self.val, "test": self.test}[split]

    def subset(self, split: str, n: int | None) -> Batch:
        """The first ``n`` samples of a split (all when ``n`` is None) as tensors: a fixed held-out
        subset. Lazily decoded splits are decoded once per (split, n) and kept."""
        ds = self.split(split)
        if isinstance(ds, TensorDataset):
            x, y = ds.tensors
            return (x, y) if n is None else (x[:n], y[:n])
        key = (split, n)
        if key not in self._memo:
            count = len(ds) if n is None else min(n, len(ds))  # type: ignore[arg-type]
            parts = list(self.batches(split, LOAD_BATCH, count))
            if not parts:
                raise DataError(f"{self.name}: the {split} split is empty")
            self._memo[key] = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
        return self._memo[key]

    def batches(self, split: str, batch_size: int, n: int | None = None, pin_memory: bool = False) -> Iterator[Batch]:
        """Ordered batches of the first ``n`` samples (all when None), decoded as they are read."""
        ds = self.split(split)
        size = len(ds)  # type: ignore[arg-type]
        count = size if n is None else min(n, size)
        if isinstance(ds, TensorDataset):
            x, y = ds.tensors
            yield from iterate_batches(x[:count], y[:count], batch_size)
            return
        part = ds if count == size else Subset(ds, range(count))
        loader = DataLoader(part, batch_size=batch_size, num_workers=self.workers, pin_memory=pin_memory)
        yield from reraise_worker_errors(loader)

    def train_batches(self, batch_size: int, seed: int, pin_memory: bool = False) -> TrainBatches:
        """Shuffled, augmented training batches, re-iterable once per epoch (all draws seeded)."""
        return TrainBatches(self, batch_size, seed, pin_memory)


class TrainBatches:
    """Training batches of a :class:`DataSplits`: a new seeded shuffle (and augmentation) per pass.

    In-memory splits: shuffled by a generator seeded with ``seed`` and augmented batch-wise by a
    second one. Lazily decoded splits: a sampler draws the order and one augmentation seed per
    sample from a generator seeded with ``seed``, so results do not depend on the worker count.
    """

    def __init__(self, data: DataSplits, batch_size: int, seed: int, pin_memory: bool = False) -> None:
        self._augment = data.augment
        self._gen = torch.Generator().manual_seed(seed)
        if data.train_augmented is None:
            lazy = not isinstance(data.train, TensorDataset)
            self._loader = make_loader(
                data.train, batch_size, shuffle=True, seed=seed, workers=data.workers if lazy else 0, pin_memory=pin_memory
            )
        else:
            view = _AugmentedView(data.train_augmented)
            self._loader = DataLoader(
                view,
                batch_size=batch_size,
                sampler=_SeededOrder(len(view), seed),
                num_workers=data.workers,
                pin_memory=pin_memory,
            )

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[Batch]:
        for x, y in reraise_worker_errors(self._loader):
            yield (self._augment(x, self._gen) if self._augment is not None else x), y


class _AugmentedView(Dataset):
    """Indexed by ``(index, seed)`` pairs from :class:`_SeededOrder`."""

    def __init__(self, samples: AugmentedSamples) -> None:
        self._samples = samples

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item
        return self._samples.augmented(index, seed)


class _SeededOrder(Sampler[tuple[int, int]]):
    """A seeded permutation per pass, each index paired with its own augmentation seed."""

    def __init__(self, n: int, seed: int) -> None:
        self._n = n
        self._gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self._n, generator=self._gen).tolist()
        seeds = torch.randint(0, 2**31 - 1, (self._n,), generator=self._gen).tolist()
        return iter(zip(order, seeds))


def reraise_worker_errors(loader: DataLoader) -> Iterator[Batch]:
    """The loader's batches; an error raised in a worker process comes back as one line."""
    try:
        yield from loader
    except DataError as exc:
        lines = str(exc).strip().splitlines()
        if len(lines) <= 1:
            raise
        raise DataError(lines[-1].split("DataError: ", 1)[-1]) from None


class Resized(Dataset):
    """In-memory images bilinearly resized on access (a 224×224 copy of a dataset is never stored)."""

    def __init__(self, base: TensorDataset, size: tuple[int, int]) -> None:
        self._base = base
        self._size = size

    def __len__(self) -> int:
        return len(self._base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._base[index]
        big = F.interpolate(x[None], size=self._size, mode="bilinear", align_corners=False, antialias=True)
        return big[0].clamp(0.0, 1.0), y


def resized(data: DataSplits, size: tuple[int, int]) -> DataSplits:
    """``data`` at another spatial size (inputs in [0, 1] without normalization only)."""
    if tuple(data.input_shape[1:]) == tuple(size):
        return data
    if not all(isinstance(s, TensorDataset) for s in (data.train, data.val, data.test)) or data.value_range.normalized:
        raise DataError(f"{data.name} cannot be resized after loading; load it at {size[0]}x{size[1]} instead")
    return dataclasses.replace(
        data,
        name=f"{data.name}@{size[0]}x{size[1]}",
        train=Resized(data.train, size),
        val=Resized(data.val, size),  # type: ignore[arg-type]
        test=Resized(data.test, size),
        input_shape=(data.input_shape[0], *size),  # type: ignore[arg-type]
    )


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> tuple[np.ndarray, ...]:
    """Indices of each part (one per fraction, the last takes the rest) with every class split in
    the same proportions; each part is shuffled by ``seed``."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        start = 0
        for k, frac in enumerate(fractions[:-1]):
            take = int(round(frac * len(idx)))
            parts[k].extend(idx[start : start + take])
            start += take
        parts[-1].extend(idx[start:])
    return tuple(rng.permutation(np.asarray(p, dtype=np.int64)) for p in parts)


def make_loader(
    ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0, workers: int = 0, pin_memory: bool = False
) -> DataLoader:
    """A loader with its own seeded generator (no global RNG)."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen, num_workers=workers, pin_memory=pin_memory)


def iterate_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[Batch]:
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
