"""Datasets by name: the embedded default (digits, digits32) and local CIFAR-10 / image folders.

haq never downloads: the local datasets read files under a root directory the user names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from haq.core.errors import DataError, InternalError
from haq.data.cifar import load_cifar10
from haq.data.digits import load_digits8, load_digits32
from haq.data.imagefolder import load_imagefolder
from haq.data.splits import DataSplits


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one named dataset: ``load(root, seed)``; ``root`` is required when ``local``."""

    load: Callable[[str | None, int], DataSplits]
    local: bool


def _rooted(load: Callable[[str, int], DataSplits]) -> Callable[[str | None, int], DataSplits]:
    def call(root: str | None, seed: int) -> DataSplits:
        if root is None:
            raise InternalError("a local dataset was loaded without a root; load_dataset checks for one")
        return load(root, seed)

    return call


DATASET_SPECS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(lambda _root, seed: load_digits8(seed), local=False),
    "digits32": DatasetSpec(lambda _root, seed: load_digits32(seed), local=False),
    "cifar10": DatasetSpec(_rooted(load_cifar10), local=True),
    "imagefolder": DatasetSpec(_rooted(lambda root, seed: load_imagefolder(root, seed=seed)), local=True),
}

DATASETS: tuple[str, ...] = tuple(DATASET_SPECS)


def load_dataset(name: str, root: str | None = None, seed: int = 0) -> DataSplits:
    """Load a dataset by name; ``cifar10`` and ``imagefolder`` need ``root`` (local files)."""
    spec = DATASET_SPECS.get(name)
    if spec is None:
        raise DataError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    if spec.local and root is None:
        raise DataError(f"dataset '{name}' reads local files: pass --data-root DIR (haq never downloads)")
    return spec.load(root, seed)
