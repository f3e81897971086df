"""Model zoo, user models (``package.module:callable``), checkpoints, and cached pretraining."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from haq.core.errors import ModelError
from haq.core.types import Log
from haq.data import DataSplits
from haq.models.digits import DigitsCNN, DigitsMLP
from haq.models.mobilenet import MobileNetV2Small
from haq.models.resnet import ResNet20
from haq.training import TrainConfig, accuracy, train_model

Factory = Callable[[int, int], nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry: how to build it, the dataset it is meant for, and its training recipe."""

    name: str
    factory: Factory
    dataset: str
    train: TrainConfig
    description: str


ZOO: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("digits_cnn", lambda c, k: DigitsCNN(c, k), "digits",
                  TrainConfig(epochs=40, lr=2e-3, batch_size=32, weight_decay=5e-4),
                  "3 conv + 1 FC for 8×8 digits (the embedded default)"),
        ModelSpec("digits_mlp", lambda c, k: DigitsMLP(c * 64, k), "digits", TrainConfig(epochs=40, lr=1e-3),
                  "64→256×6→10 MLP (7 linear layers) for robustness studies"),
        ModelSpec("resnet20", lambda c, k: ResNet20(c, k), "digits32", TrainConfig(epochs=15, lr=3e-3),
                  "ResNet-20 (CIFAR style, 24 quantizable layers) for 32×32"),
        ModelSpec("mobilenetv2", lambda c, k: MobileNetV2Small(c, k), "digits32", TrainConfig(epochs=15, lr=3e-3),
                  "MobileNetV2-style net with depthwise convs for 32×32"),
    )
}


def model_names() -> list[str]:
    """Names accepted by :func:`build_model` besides ``package.module:callable`` paths."""
    return sorted(ZOO)


def _import_callable(path: str) -> Callable[..., nn.Module]:
    mod_name, _, attr = path.partition(":")
    if not mod_name or not attr:
        raise ModelError(f"model '{path}' is neither a zoo name ({', '.join(model_names())}) nor 'package.module:callable'")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(f"cannot import module '{mod_name}' for model '{path}': {exc}") from exc
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"module '{mod_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(f"'{path}' is not callable")
    return obj  # type: ignore[return-value]


def build_model(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A fresh (untrained) model: a zoo name or a user's ``package.module:callable``.

    User callables are called with no arguments and must return an ``nn.Module``.
    """
    if name in ZOO:
        return ZOO[name].factory(int(input_shape[0]), num_classes)
    fn = _import_callable(name)
    try:
        model = fn()
    except Exception as exc:
        raise ModelError(f"calling '{name}()' failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"'{name}()' returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_checkpoint_(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a float state dict safely (``weights_only=True``: no arbitrary unpickling)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint {p} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"checkpoint {p} cannot be loaded safely (weights only): {str(exc).splitlines()[0]}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint {p} holds {type(state).__name__}, expected a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {p} does not match the model: {str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}") from exc
    return model


def default_cache_dir() -> Path:
    """Where trained zoo models are cached: ``$HAQ_CACHE_DIR`` or ``~/.cache/haq``."""
    return Path(os.environ.get("HAQ_CACHE_DIR", Path.home() / ".cache" / "haq"))


def _cache_key(name: str, data: DataSplits, cfg: TrainConfig) -> str:
    blob = json.dumps({"model": name, "data": data.name, "n": len(data.train), "cfg": cfg.to_dict(), "v": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrained_model(
    name: str,
    data: DataSplits,
    device: torch.device,
    cache_dir: Path | None = None,
    train: TrainConfig | None = None,
    log: Log | None = None,
) -> nn.Module:
    """A trained float zoo model, trained once and cached on disk (keyed by model, data, recipe)."""
    if name not in ZOO:
        raise ModelError(f"unknown zoo model '{name}'; choose one of {', '.join(model_names())} or pass a checkpoint")
    cfg = train or ZOO[name].train
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        model = build_model(name, data.input_shape, data.num_classes)
    path = (cache_dir or default_cache_dir()) / f"{name}-{data.name}-{_cache_key(name, data, cfg)}.pt"
    if path.is_file():
        return load_checkpoint_(model, path).to(device).eval()
    if log:
        log(f"training {name} on {data.name} ({cfg.epochs} epochs, cached at {path})")
    train_model(model, data, cfg, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    if log:
        x, y = data.subset("test", None)
        log(f"{name}: float test accuracy {accuracy(model, x, y, device):.4f}")
    return model.eval()


__all__ = [
    "ZOO",
    "ModelSpec",
    "build_model",
    "default_cache_dir",
    "load_checkpoint_",
    "model_names",
    "pretrained_model",
]
