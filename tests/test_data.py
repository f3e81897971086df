"""Datasets: deterministic digits splits, local CIFAR-10 binary files, image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from haq.core.errors import DataError
from haq.data import load_dataset
from haq.data.cifar import RECORD, TEST_FILE, TRAIN_FILES


def test_digits_splits_are_deterministic_and_disjoint() -> None:
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=0)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])  # type: ignore[attr-defined]
    assert (len(a.train), len(a.val), len(a.test)) == (1078, 359, 360)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    x = a.train.tensors[0]
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    rows = {tuple(r) for r in a.train.tensors[0].flatten(1).tolist()}
    overlap = sum(tuple(r) in rows for r in a.test.tensors[0].flatten(1).tolist())
    assert overlap < 5  # load_digits has a handful of exact duplicate images, nothing more
    assert not torch.equal(load_dataset("digits", seed=1).train.tensors[1], a.train.tensors[1])


def test_digits32_and_its_augmentation() -> None:
    d = load_dataset("digits32")
    assert d.input_shape == (1, 32, 32) and d.augment is not None
    x = d.train.tensors[0][:8]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(d.augment(x, g1), d.augment(x, g2))
    assert not torch.equal(d.augment(x, torch.Generator().manual_seed(4)), x)


def test_unknown_dataset_and_missing_root() -> None:
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="--data-root"):
        load_dataset("cifar10")


def _write_cifar(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for f in TRAIN_FILES + [TEST_FILE]:
        rec = rng.integers(0, 256, size=(n, RECORD), dtype=np.uint8)
        rec[:, 0] = rng.integers(0, 10, size=n)
        rec.tofile(root / f)


def test_cifar10_binary(tmp_path: Path) -> None:
    _write_cifar(tmp_path, 20)
    d = load_dataset("cifar10", root=str(tmp_path))
    assert d.input_shape == (3, 32, 32)
    assert len(d.train) + len(d.val) == 100 and len(d.test) == 20
    assert float(d.train.tensors[0].max()) <= 1.0


def test_cifar10_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_dataset("cifar10", root=str(tmp_path))
    _write_cifar(tmp_path, 4)
    (tmp_path / TEST_FILE).write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="whole number"):
        load_dataset("cifar10", root=str(tmp_path))


def _folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), n: int = 5, size: tuple[int, int] = (12, 10)) -> None:
    Image = pytest.importorskip("PIL.Image")
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((size[1], size[0], 3), (20 * i + k) % 256, dtype=np.uint8)).save(root / c / f"{i}.png")


def test_imagefolder_class_folders(tmp_path: Path) -> None:
    _folder(tmp_path)
    d = load_dataset("imagefolder", root=str(tmp_path))
    assert d.num_classes == 2 and d.input_shape == (3, 224, 224)  # ImageNet-style by default
    assert len(d.train) + len(d.val) + len(d.test) == 10
    assert d.value_range.normalized and d.train_augmented is not None
    small = load_dataset("imagefolder", root=str(tmp_path), shape=(1, 32, 32))
    assert small.input_shape == (1, 32, 32) and small.subset("train", 2)[0].shape == (2, 1, 32, 32)
    with pytest.raises(DataError, match="class folders"):
        load_dataset("imagefolder", root=str(tmp_path / "cat"))


def test_imagefolder_train_val_layout(tmp_path: Path) -> None:
    _folder(tmp_path / "train", n=10)
    _folder(tmp_path / "val", n=3)
    d = load_dataset("imagefolder", root=str(tmp_path), shape=(3, 16, 16))
    assert d.num_classes == 2 and len(d.test) == 6  # val/ is the test split
    assert len(d.train) + len(d.val) == 20 and len(d.val) == 2  # 10 % of train/ per class held out
    _folder(tmp_path / "val", classes=("bird",), n=1)
    with pytest.raises(DataError, match="class 'bird' has no folder under train/"):
        load_dataset("imagefolder", root=str(tmp_path))


def test_imagefolder_errors_are_one_line(tmp_path: Path) -> None:
    _folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="hold no image"):
        load_dataset("imagefolder", root=str(tmp_path))
    (tmp_path / "empty" / "bad.png").write_bytes(b"not a png")
    d = load_dataset("imagefolder", root=str(tmp_path), shape=(3, 8, 8), workers=1)
    with pytest.raises(DataError) as err:
        d.subset("train", None)
    assert "cannot decode" in str(err.value) and "\n" not in str(err.value)  # from a worker process, one line


def test_builtin_datasets_resize_lazily() -> None:
    d = load_dataset("digits", shape=(1, 16, 16))
    x, _ = d.subset("val", 4)
    assert d.input_shape == (1, 16, 16) and x.shape == (4, 1, 16, 16) and d.name == "digits@16x16"
    with pytest.raises(DataError, match="1 channel"):
        load_dataset("digits", shape=(3, 8, 8))
