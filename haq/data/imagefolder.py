"""Image folders from local files, decoded lazily with ImageNet-style preprocessing.

Two layouts are recognised:

* ``root/<class>/<image>``: every image, split 60 / 20 / 20 (train / val / test) per class;
* ``root/train/<class>/<image>`` + ``root/val/<class>/<image>`` (``test/`` is accepted for
  ``val/``): ``val/`` is the test split (as ImageNet's validation set is used), and 10 % of
  ``train/`` per class is held out as the validation split the search scores on.

Classes are the sorted folder names of the training images, so an ImageNet ``train/`` gives
torchvision's class indices. Only file names are read up front; images are decoded when a
batch needs them (in DataLoader workers when ``workers > 0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from haq.core.errors import DataError
from haq.data.space import imagenet_range
from haq.data.splits import DataSplits, stratified_split
from haq.data.transforms import Preprocess

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
FLAT_FRACTIONS = (0.6, 0.2, 0.2)
HELD_OUT = 0.1
"""Fraction of ``train/`` held out as the validation split in the train / val layout."""
TEST_DIRS = ("val", "test")


@dataclass(frozen=True)
class FolderIndex:
    """The files of an image folder: class names, and (path, label) per split."""

    root: Path
    classes: tuple[str, ...]
    train: tuple[tuple[Path, int], ...]
    val: tuple[tuple[Path, int], ...]
    test: tuple[tuple[Path, int], ...]
    layout: str


class ImageFiles(Dataset):
    """Image files decoded on access: ``dataset[i]`` with the evaluation transform,
    ``augmented(i, seed)`` with the training one."""

    def __init__(self, items: tuple[tuple[Path, int], ...], preprocess: Preprocess) -> None:
        self._items = items
        self._pre = preprocess

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self._items[index]
        return self._pre.evaluate(path), label

    def augmented(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        path, label = self._items[index]
        return self._pre.train(path, np.random.default_rng(seed)), label


def _images(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _labelled(folder: Path, classes: dict[str, int]) -> list[tuple[Path, int]]:
    out = []
    for d in _class_dirs(folder):
        if d.name not in classes:
            raise DataError(f"{d}: class '{d.name}' has no folder under train/; every class needs training images")
        out.extend((f, classes[d.name]) for f in _images(d))
    return out


def _split(items: list[tuple[Path, int]], fractions: tuple[float, ...], seed: int) -> list[tuple[tuple[Path, int], ...]]:
    labels = np.asarray([label for _, label in items], dtype=np.int64)
    return [tuple(items[i] for i in part) for part in stratified_split(labels, fractions, seed)]


def _shuffled(items: list[tuple[Path, int]], seed: int) -> tuple[tuple[Path, int], ...]:
    order = np.random.default_rng(seed).permutation(len(items))
    return tuple(items[i] for i in order)


def index_folder(root: str | Path, seed: int = 0) -> FolderIndex:
    """Find the layout, the classes and the seeded splits of an image folder (no image is decoded)."""
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"--data-root {base} is not a directory")
    test_dir = next((base / d for d in TEST_DIRS if (base / d).is_dir()), None)
    split_layout = (base / "train").is_dir() and bool(_class_dirs(base / "train")) and not _images(base / "train")
    top = base / "train" if split_layout else base
    class_dirs = _class_dirs(top)
    if not class_dirs:
        raise DataError(f"{base}: expected class folders (root/<class>/<image>) or train/ and val/ of class folders")
    classes = {d.name: i for i, d in enumerate(class_dirs)}
    empty = [d.name for d in class_dirs if not _images(d)]
    if empty:
        raise DataError(f"{top}: class folder(s) {', '.join(empty[:5])} hold no image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    train_items = _labelled(top, classes)
    if split_layout:
        test_items = _labelled(test_dir, classes) if test_dir is not None else []
        if test_dir is None:
            train, val, test = _split(train_items, FLAT_FRACTIONS, seed)
            layout = "train/ only (split 60/20/20)"
        else:
            if not test_items:
                raise DataError(f"{test_dir}: no images in its class folders")
            train, val = _split(train_items, (1.0 - HELD_OUT, HELD_OUT), seed)
            test = _shuffled(test_items, seed)
            layout = f"train/ + {test_dir.name}/"
    else:
        train, val, test = _split(train_items, FLAT_FRACTIONS, seed)
        layout = "class folders (split 60/20/20)"
    if min(len(train), len(val), len(test)) == 0:
        raise DataError(f"{base}: {len(train_items)} training images are too few to give train, val and test splits; add images")
    return FolderIndex(base, tuple(classes), train, val, test, layout)


def count_classes(root: str | Path) -> int:
    """The number of classes of an image folder, read from its folder names only."""
    return len(index_folder(root).classes)


def load_imagefolder(
    root: str | Path, shape: tuple[int, int, int] = (3, 224, 224), seed: int = 0, workers: int = 0
) -> DataSplits:
    """An image folder at ``shape`` (1 channel: grey; 3: RGB), ImageNet-normalized, decoded lazily."""
    idx = index_folder(root, seed)
    channels, height, width = shape
    pre = Preprocess(channels, height, width, imagenet_range(channels))
    train = ImageFiles(idx.train, pre)
    return DataSplits(
        f"imagefolder:{idx.root.name}@{'grey' if channels == 1 else 'rgb'}{height}x{width}",
        train,
        ImageFiles(idx.val, pre),
        ImageFiles(idx.test, pre),
        (channels, height, width),
        len(idx.classes),
        value_range=pre.value_range,
        train_augmented=train,
        workers=workers,
    )
