"""A workload: the float model, its data and its quantizable layers, resolved from a config.

Every command and the search start from a :class:`Workload`, so "which model, which data,
which checkpoint" is decided in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from haq.core import validate
from haq.core.errors import ModelError
from haq.core.types import Log
from haq.data import DATASETS, DataSplits, load_dataset
from haq.models import ZOO, build_model, load_checkpoint_, pretrained_model
from haq.quant import LayerInfo, discover_layers

DEFAULT_MODEL = "digits_cnn"


@dataclass(frozen=True)
class WorkloadConfig:
    """What to quantize.

    model: zoo name (``digits_cnn``, ``digits_mlp``, ``resnet20``, ``mobilenetv2``) or
        ``package.module:callable`` returning an ``nn.Module``.
    dataset: dataset name; ``None`` picks the zoo model's own (``digits`` for user models).
    data_root: local directory for ``cifar10`` / ``imagefolder``.
    checkpoint: float state dict to load instead of training (``weights_only`` loading).
    seed: data split and training seed.
    train_epochs: override of the zoo training recipe's epochs (``None`` keeps it).
    """

    model: str = DEFAULT_MODEL
    dataset: str | None = None
    data_root: str | None = None
    checkpoint: str | None = None
    seed: int = 0
    train_epochs: int | None = None

    def __post_init__(self) -> None:
        if self.dataset is not None:
            validate.choice("dataset", self.dataset, DATASETS)
        if self.train_epochs is not None:
            validate.count("train_epochs", self.train_epochs, low=0)

    def resolved_dataset(self) -> str:
        """The dataset actually used."""
        if self.dataset is not None:
            return self.dataset
        return ZOO[self.model].dataset if self.model in ZOO else "digits"


@dataclass
class Workload:
    """A trained float model with its data and layer list (the model is never modified here)."""

    config: WorkloadConfig
    model: nn.Module
    data: DataSplits
    layers: list[LayerInfo]
    device: torch.device

    @property
    def layer_names(self) -> list[str]:
        """Quantizable layers in execution order."""
        return [layer.name for layer in self.layers]


def load_workload(
    cfg: WorkloadConfig,
    device: torch.device,
    cache_dir: Path | None = None,
    log: Log | None = None,
) -> Workload:
    """Resolve model + data, load or train (cached) the float weights, discover layers."""
    if cfg.model not in ZOO and ":" not in cfg.model:
        raise ModelError(f"unknown model '{cfg.model}'; choose one of {', '.join(sorted(ZOO))} or package.module:callable")
    data = load_dataset(cfg.resolved_dataset(), cfg.data_root, cfg.seed)
    if cfg.checkpoint is not None:
        model = load_checkpoint_(build_model(cfg.model, data.input_shape, data.num_classes), cfg.checkpoint)
        model = model.to(device).eval()
    elif cfg.model in ZOO:
        recipe = replace(ZOO[cfg.model].train, seed=cfg.seed)
        if cfg.train_epochs is not None:
            recipe = replace(recipe, epochs=cfg.train_epochs)
        model = pretrained_model(cfg.model, data, device, cache_dir, recipe, log)
    else:
        raise ModelError(f"user model '{cfg.model}' needs --checkpoint (a float state dict); haq trains only zoo models")
    layers = discover_layers(model, data.input_shape)
    return Workload(cfg, model, data, layers, device)
