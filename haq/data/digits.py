"""scikit-learn's handwritten digits (ships offline): 8×8 originals and a 32×32 variant."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from haq.core.errors import DataError
from haq.data.splits import DataSplits, random_shift, stratified_split

SPLIT_FRACTIONS = (0.6, 0.2, 0.2)


def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # scikit-learn is a core dependency; this guards broken installs
        raise DataError("the digits dataset needs scikit-learn: pip install scikit-learn") from exc
    d = load_digits()
    x = (d.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return x, d.target.astype(np.int64)


def _split(x: torch.Tensor, y: np.ndarray, seed: int) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    tr, va, te = stratified_split(y, SPLIT_FRACTIONS, seed)
    yt = torch.from_numpy(y)
    return (TensorDataset(x[tr], yt[tr]), TensorDataset(x[va], yt[va]), TensorDataset(x[te], yt[te]))


def load_digits8(seed: int = 0) -> DataSplits:
    """1,797 8×8 grey images in [0, 1]; stratified 60/20/20 split fixed by ``seed``."""
    x, y = _raw_digits()
    train, val, test = _split(torch.from_numpy(x), y, seed)
    return DataSplits("digits", train, val, test, (1, 8, 8), 10)


def load_digits32(seed: int = 0) -> DataSplits:
    """The same images bilinearly upsampled to 32×32, with ±2 px seeded shift augmentation.

    Gives ResNet-style and depthwise models realistic spatial sizes without any download.
    """
    x, y = _raw_digits()
    big = F.interpolate(torch.from_numpy(x), size=(32, 32), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    train, val, test = _split(big.contiguous(), y, seed)
    return DataSplits("digits32", train, val, test, (1, 32, 32), 10, augment=random_shift(2))
