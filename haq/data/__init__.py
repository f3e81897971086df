"""Datasets: the embedded default (digits), and local CIFAR-10 / image folders. Never downloads."""

from __future__ import annotations

from haq.core.errors import DataError
from haq.data.splits import DataSplits, iterate_batches, make_loader, stratified_split

DATASETS = ("digits", "digits32", "cifar10", "imagefolder")


def load_dataset(name: str, root: str | None = None, seed: int = 0) -> DataSplits:
    """Load a dataset by name; ``cifar10`` and ``imagefolder`` need ``root`` (local files)."""
    if name == "digits":
        from haq.data.digits import load_digits8

        return load_digits8(seed)
    if name == "digits32":
        from haq.data.digits import load_digits32

        return load_digits32(seed)
    if name in ("cifar10", "imagefolder"):
        if root is None:
            raise DataError(f"dataset '{name}' reads local files: pass --data-root DIR (haq never downloads)")
        if name == "cifar10":
            from haq.data.cifar import load_cifar10

            return load_cifar10(root, seed)
        from haq.data.imagefolder import load_imagefolder

        return load_imagefolder(root, seed=seed)
    raise DataError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")


__all__ = ["DATASETS", "DataSplits", "iterate_batches", "load_dataset", "make_loader", "stratified_split"]
