"""Trained zoo models, trained once and cached on disk by model, data and training recipe."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import torch
from torch import nn

from haq.core import config as serial
from haq.core.errors import ModelError
from haq.core.fileio import atomic_write_bytes
from haq.core.types import Log
from haq.data import DataSplits
from haq.models.loading import build_model, load_checkpoint_
from haq.models.zoo import ZOO, model_names
from haq.training import TrainConfig, accuracy, train_model

CACHE_FORMAT = 1
"""Bumped when a cached file's meaning changes, so stale weights are never reused."""


def default_cache_dir() -> Path:
    """Where trained zoo models are cached: ``$HAQ_CACHE_DIR`` or ``~/.cache/haq``."""
    return Path(os.environ.get("HAQ_CACHE_DIR", Path.home() / ".cache" / "haq"))


def cache_key(name: str, data: DataSplits, cfg: TrainConfig) -> str:
    """A deterministic 16-hex-digit key of everything that determines the trained weights."""
    blob = json.dumps(
        {"model": name, "data": data.name, "n": len(data.train), "cfg": serial.to_dict(cfg), "v": CACHE_FORMAT},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrained_model(
    name: str,
    data: DataSplits,
    device: torch.device,
    cache_dir: Path | None = None,
    train: TrainConfig | None = None,
    log: Log | None = None,
) -> nn.Module:
    """A trained float zoo model in eval mode, loaded from the cache or trained (seeded) and cached."""
    if name not in ZOO:
        raise ModelError(f"unknown zoo model '{name}'; choose one of {', '.join(model_names())} or pass a checkpoint")
    cfg = train or ZOO[name].train
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        model = build_model(name, data.input_shape, data.num_classes)
    path = (cache_dir or default_cache_dir()) / f"{name}-{data.name}-{cache_key(name, data, cfg)}.pt"
    if path.is_file():
        return load_checkpoint_(model, path).to(device).eval()
    if log:
        log(f"training {name} on {data.name} ({cfg.epochs} epochs, cached at {path})")
    train_model(model, data, cfg, device)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(path, buf.getvalue())
    if log:
        x, y = data.subset("test", None)
        log(f"{name}: float test accuracy {accuracy(model, x, y, device):.4f}")
    return model.eval()
