"""Image-folder datasets (``root/<class>/<image>``) from local files, resized to a square."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from haq.core.errors import DataError
from haq.data.splits import DataSplits, stratified_split

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def load_imagefolder(root: str | Path, size: int = 32, grayscale: bool = False, seed: int = 0) -> DataSplits:
    """Load every image under ``root/<class>/`` into memory and split it 60/20/20 by class."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise DataError("image folders need Pillow: pip install 'haq[images]'") from exc
    base = Path(root)
    classes = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    if not classes:
        raise DataError(f"{base}: expected one sub-directory per class (root/<class>/<image>)")
    xs: list[np.ndarray] = []
    ys: list[int] = []
    mode = "L" if grayscale else "RGB"
    for label, cls in enumerate(classes):
        for f in sorted((base / cls).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(f) as img:
                arr = np.asarray(img.convert(mode).resize((size, size)), dtype=np.float32) / 255.0
            xs.append(arr[None] if grayscale else arr.transpose(2, 0, 1))
            ys.append(label)
    if len(ys) < 3:
        raise DataError(f"{base}: found {len(ys)} images; need at least 3 to split")
    x = torch.from_numpy(np.stack(xs))
    y = np.asarray(ys, dtype=np.int64)
    tr, va, te = stratified_split(y, (0.6, 0.2, 0.2), seed)
    yt = torch.from_numpy(y)
    return DataSplits(
        f"imagefolder:{base.name}", TensorDataset(x[tr], yt[tr]), TensorDataset(x[va], yt[va]),
        TensorDataset(x[te], yt[te]), tuple(x.shape[1:]), len(classes),
    )
