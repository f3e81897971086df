"""CIFAR-10 from a user's local copy of the binary distribution (never downloaded, no pickle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from haq.core.errors import DataError
from haq.data.splits import DataSplits, random_shift

RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"
VAL_SIZE = 5000


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise DataError(f"{path}: size {raw.size} bytes is not a whole number of {RECORD}-byte CIFAR-10 records")
    rec = raw.reshape(-1, RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"{path}: label {labels.max()} out of range 0..9; is this the CIFAR-10 binary version?")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar10(root: str | Path, seed: int = 0) -> DataSplits:
    """Read ``data_batch_*.bin`` / ``test_batch.bin`` from ``root`` (or its ``cifar-10-batches-bin``).

    The last 5,000 training images (after a seeded shuffle; 10 % for smaller copies) form the
    validation split.
    """
    base = Path(root)
    if (base / "cifar-10-batches-bin").is_dir():
        base = base / "cifar-10-batches-bin"
    missing = [f for f in TRAIN_FILES + [TEST_FILE] if not (base / f).is_file()]
    if missing:
        raise DataError(f"CIFAR-10 binary files {missing} not found in {base}; haq never downloads data")
    parts = [_read(base / f) for f in TRAIN_FILES]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    perm = np.random.default_rng(seed).permutation(len(y))
    x, y = x[perm], y[perm]
    xt, yt = _read(base / TEST_FILE)
    n_val = min(VAL_SIZE, max(1, len(y) // 10))

    def ds(a: np.ndarray, b: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy(a.astype(np.float32) / 255.0), torch.from_numpy(b))

    return DataSplits(
        "cifar10",
        ds(x[:-n_val], y[:-n_val]),
        ds(x[-n_val:], y[-n_val:]),
        ds(xt, yt),
        (3, 32, 32),
        10,
        augment=random_shift(4),
    )
