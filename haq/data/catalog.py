"""Datasets by name: the embedded default (digits, digits32) and local CIFAR-10 / image folders.

haq never downloads: the local datasets read files under a root directory the user names.
Each entry also states its native input (channels, side) and class count, so a model's input
shape can be resolved without reading any data (``haq tables build`` prices shapes only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from haq.core.errors import DataError, InternalError
from haq.data.cifar import load_cifar10
from haq.data.digits import load_digits8, load_digits32
from haq.data.imagefolder import count_classes, load_imagefolder
from haq.data.splits import DataSplits, resized

Shape = tuple[int, int, int]
Loader = Callable[[str | None, int, Shape, int], DataSplits]
"""``(root, seed, (C, H, W), workers) -> splits``."""


@dataclass(frozen=True)
class DatasetSpec:
    """One named dataset.

    load: reads it at a (C, H, W) shape; ``root`` is required when ``local``.
    channels / size: its native input (an image folder decodes to any size, 1 or 3 channels).
    classes: its class count, ``None`` when read from the files (image folders).
    flexible: decodes to any shape (image folders); the others are resized from ``size``.
    """

    load: Loader
    local: bool
    channels: int
    size: int
    classes: int | None
    flexible: bool = False


def _fixed(load: Callable[[str | None, int], DataSplits]) -> Loader:
    """A dataset stored at one size: resized lazily when another (H, W) is asked for."""

    def call(root: str | None, seed: int, shape: Shape, _workers: int) -> DataSplits:
        return resized(load(root, seed), (shape[1], shape[2]))

    return call


def _rooted(load: Callable[[str, int], DataSplits]) -> Callable[[str | None, int], DataSplits]:
    def call(root: str | None, seed: int) -> DataSplits:
        if root is None:
            raise InternalError("a local dataset was loaded without a root; load_dataset checks for one")
        return load(root, seed)

    return call


def _imagefolder(root: str | None, seed: int, shape: Shape, workers: int) -> DataSplits:
    if root is None:
        raise InternalError("an image folder was loaded without a root; load_dataset checks for one")
    return load_imagefolder(root, shape, seed, workers)


DATASET_SPECS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(_fixed(lambda _root, seed: load_digits8(seed)), False, 1, 8, 10),
    "digits32": DatasetSpec(_fixed(lambda _root, seed: load_digits32(seed)), False, 1, 32, 10),
    "cifar10": DatasetSpec(_fixed(_rooted(load_cifar10)), True, 3, 32, 10),
    "imagefolder": DatasetSpec(_imagefolder, True, 3, 224, None, flexible=True),
}

DATASETS: tuple[str, ...] = tuple(DATASET_SPECS)


def dataset_spec(name: str) -> DatasetSpec:
    """The entry of a dataset name, or a :class:`DataError` listing the valid names."""
    spec = DATASET_SPECS.get(name)
    if spec is None:
        raise DataError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    return spec


def check_shape(name: str, shape: Shape) -> None:
    """Refuse a (C, H, W) the dataset cannot deliver, naming what it can."""
    spec = dataset_spec(name)
    if spec.flexible:
        if shape[0] not in (1, 3):
            raise DataError(f"dataset {name} decodes to 1 (grey) or 3 (RGB) channels, not {shape[0]}")
        return
    if shape[0] != spec.channels:
        raise DataError(
            f"dataset {name} has {spec.channels} channel(s), but the input shape asks for {shape[0]}; "
            f"use --input-size to change only the resolution, or another --dataset"
        )


def dataset_classes(name: str, root: str | None) -> int | None:
    """The class count, read from folder names for an image folder (``None`` without a root)."""
    spec = dataset_spec(name)
    if spec.classes is not None:
        return spec.classes
    return count_classes(root) if root is not None else None


def load_dataset(name: str, root: str | None = None, seed: int = 0, shape: Shape | None = None, workers: int = 0) -> DataSplits:
    """Load a dataset by name at ``shape`` (default: its native one); ``cifar10`` and
    ``imagefolder`` need ``root`` (local files)."""
    spec = dataset_spec(name)
    if spec.local and root is None:
        raise DataError(f"dataset '{name}' reads local files: pass --data-root DIR (haq never downloads)")
    target = shape if shape is not None else (spec.channels, spec.size, spec.size)
    check_shape(name, target)
    return spec.load(root, seed, target, workers)
