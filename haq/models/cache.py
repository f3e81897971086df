"""Trained zoo models, trained once and cached on disk by model, data, training recipe and the
torch and haq versions (either may change what the same recipe trains).

Several processes may need the same model at once (two searches, a service's workers): a file
lock beside the cached file (``filelock``) makes one of them train while the others wait and
then load its result; files appear by atomic rename, so no reader ever sees half of one.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import re
from pathlib import Path
from typing import Mapping

import torch
from filelock import FileLock, Timeout
from torch import nn

from haq import __version__ as haq_version
from haq.core import config as serial
from haq.core.errors import ModelError
from haq.core.fileio import atomic_write_bytes, remove_stale_temps
from haq.core.types import Log
from haq.data import DataSplits
from haq.models.loading import build_model, load_checkpoint_
from haq.models.zoo import ZOO, model_names
from haq.training import TrainConfig, split_accuracy, train_model

CACHE_FORMAT = 1
"""Bumped when a cached file's meaning changes, so stale weights are never reused."""


def default_cache_dir() -> Path:
    """Where trained zoo models are cached: ``$HAQ_CACHE_DIR`` or ``~/.cache/haq`` (also when the
    variable is set but empty, which would otherwise mean the current directory)."""
    return Path(os.environ.get("HAQ_CACHE_DIR") or Path.home() / ".cache" / "haq")


def cache_key(name: str, data: DataSplits, cfg: TrainConfig, versions: Mapping[str, str] | None = None) -> str:
    """A deterministic 16-hex-digit key of everything that determines the trained weights.

    versions: the software that trains (default: this torch and this haq); weights cached by
    another version are never reused.
    """
    blob = json.dumps(
        {
            "model": name,
            "data": data.name,
            "n": len(data.train),
            "cfg": serial.to_dict(cfg),
            "v": CACHE_FORMAT,
            "versions": dict(versions if versions is not None else software_versions()),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def software_versions() -> dict[str, str]:
    """The versions a cached model's key records."""
    return {"torch": str(torch.__version__), "haq": haq_version}


def pretrained_model(
    name: str,
    data: DataSplits,
    device: torch.device,
    cache_dir: Path | None = None,
    train: TrainConfig | None = None,
    log: Log | None = None,
    start: Path | None = None,
) -> nn.Module:
    """A trained float model in eval mode, loaded from the cache or trained (seeded) and cached.

    A zoo model trains with its recipe unless ``train`` is given; a user model
    (``package.module:callable``) needs ``train``. ``start``: a checkpoint to fine-tune from.
    The user's source file and the checkpoint's bytes are part of the cache key.
    """
    if name not in ZOO and train is None:
        raise ModelError(f"unknown zoo model '{name}'; choose one of {', '.join(model_names())} or pass a checkpoint")
    cfg = train or ZOO[name].train
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        model = build_model(name, data.input_shape, data.num_classes)
    if start is not None:
        load_checkpoint_(model, start)
    directory = cache_dir or default_cache_dir()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    path = directory / f"{stem}-{data.name}-{cache_key(model_identity(name, start), data, cfg)}.pt"
    if path.is_file():
        return load_checkpoint_(model, path).to(device).eval()
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if log:
            log(f"waiting for another process training {name} on {data.name} ({path})")
        lock.acquire()
    try:
        if path.is_file():  # trained by the process we waited for
            return load_checkpoint_(model, path).to(device).eval()
        remove_stale_temps(directory)
        if log:
            log(f"training {name} on {data.name} ({cfg.epochs} epochs, cached at {path})")
        train_model(model, data, cfg, device)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        atomic_write_bytes(path, buf.getvalue())
    finally:
        lock.release()
    if log:
        log(f"{name}: float test accuracy {split_accuracy(model, data, 'test', device):.4f}")
    return model.eval()


def model_identity(name: str, start: Path | None = None) -> str:
    """What names a model's weights in the cache key: a zoo name alone; a user model with a
    digest of its module's source file; either with a digest of the checkpoint it starts from."""
    parts = [name]
    if name not in ZOO:
        source = getattr(importlib.import_module(name.partition(":")[0]), "__file__", None)
        parts.append(hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16] if source else "no-source")
    if start is not None:
        parts.append("from:" + hashlib.sha256(Path(start).read_bytes()).hexdigest()[:16])
    return "|".join(parts)
