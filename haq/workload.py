"""A workload: the float model, its data and its quantizable layers, resolved from a config.

Every command and the search start from a :class:`Workload` (or, for commands that price
shapes only, from :func:`workload_layers`), so "which model, which data, which checkpoint, which
input shape" is decided in exactly one place.

The input shape rule (:func:`resolve_input`), shared by every command that discovers layers:

1. ``input_shape`` (``--input-shape C,H,W``) when given: a model priced without any data;
2. otherwise the channels of the dataset (the one named, else the zoo model's own, else
   ``digits``) at a square side: ``input_size`` (``--input-size``), else the zoo model's native
   side (8 for the digits models, 32 for ResNet-20 / MobileNetV2-small, 224 for ``resnet18`` /
   ``mobilenet_v2``), else the dataset's (8 digits, 32 digits32 / CIFAR-10, 224 image folders).

Datasets are loaded at the resolved shape (image folders decode to it; in-memory datasets are
resized on access), so the layers a table prices and the layers a search quantizes agree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from haq.core import validate
from haq.core.errors import ConfigError, DataError, ModelError
from haq.core.types import Log
from haq.data import DATASETS, DataSplits, check_shape, dataset_classes, dataset_spec, load_dataset
from haq.models import ZOO, build_model, load_checkpoint_, pretrained_model
from haq.models.zoo import USER_RECIPE
from haq.quant import LayerInfo, discover_layers
from haq.training import TrainConfig

DEFAULT_MODEL = "digits_cnn"
MAX_SIDE = 4096
MAX_WORKERS = 64
FINETUNE_LR_SCALE = 0.1
"""Fine-tuning a checkpoint uses the recipe's learning rate times this (it starts trained)."""
Shape = tuple[int, int, int]


@dataclass(frozen=True)
class WorkloadConfig:
    """What to quantize.

    model: zoo name (``digits_cnn``, ``digits_mlp``, ``resnet20``, ``mobilenetv2``, ``resnet18``,
        ``mobilenet_v2``) or ``package.module:callable`` returning an ``nn.Module``.
    dataset: dataset name; ``None`` picks the zoo model's own (``digits`` for user models).
    data_root: local directory for ``cifar10`` / ``imagefolder``.
    checkpoint: float state dict to load instead of training (``weights_only`` loading).
    seed: data split and training seed.
    train_epochs: override of the zoo training recipe's epochs (``None`` keeps it); for a user
        model without a checkpoint, the epochs it is trained here with the zoo's recipe.
    finetune_epochs: fine-tune ``checkpoint`` on the data for this many epochs first (cached).
    input_size: square input side (``--input-size``); see the module docstring for the rule.
    input_shape: (C, H, W) of one input (``--input-shape``), for a model without a dataset.
    workers: DataLoader worker processes decoding image folders (0: in this process).
    """

    model: str = DEFAULT_MODEL
    dataset: str | None = None
    data_root: str | None = None
    checkpoint: str | None = None
    seed: int = 0
    train_epochs: int | None = None
    finetune_epochs: int | None = None
    input_size: int | None = None
    input_shape: tuple[int, int, int] | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        if self.dataset is not None:
            validate.choice("dataset", self.dataset, DATASETS)
        if self.train_epochs is not None:
            validate.count("train_epochs", self.train_epochs, low=0)
        if self.finetune_epochs is not None:
            validate.count("finetune_epochs", self.finetune_epochs, low=1)
            if self.checkpoint is None:
                raise ConfigError("--finetune-epochs fine-tunes a --checkpoint; without one, train with --train-epochs N")
        if self.input_size is not None:
            validate.count("input_size", self.input_size, 1, MAX_SIDE)
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", check_input_shape(self.input_shape))
            if self.input_size is not None and self.input_shape[1:] != (self.input_size, self.input_size):
                raise ConfigError(
                    f"--input-size {self.input_size} contradicts --input-shape "
                    f"{','.join(map(str, self.input_shape))}; give one of them"
                )
        validate.count("workers", self.workers, 0, MAX_WORKERS)

    def resolved_dataset(self) -> str:
        """The dataset actually used."""
        if self.dataset is not None:
            return self.dataset
        return ZOO[self.model].dataset if self.model in ZOO else "digits"


def check_input_shape(shape: Sequence[int]) -> Shape:
    """A (C, H, W) of positive integers, sides at most :data:`MAX_SIDE`."""
    dims = tuple(shape)
    if len(dims) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise ConfigError(f"input_shape must be three integers C,H,W (e.g. 3,224,224), got {shape!r}")
    c, h, w = dims
    validate.count("input_shape channels", c, 1, 64)
    validate.count("input_shape height", h, 1, MAX_SIDE)
    validate.count("input_shape width", w, 1, MAX_SIDE)
    return (c, h, w)


@dataclass(frozen=True)
class InputSpec:
    """A resolved input: its (C, H, W) and where that came from (named in error messages)."""

    shape: Shape
    origin: str

    @property
    def text(self) -> str:
        """``C×H×W``."""
        return "x".join(map(str, self.shape))


def resolve_input(cfg: WorkloadConfig) -> InputSpec:
    """The input shape of ``cfg``'s model by the rule in the module docstring (no data is read)."""
    if cfg.input_shape is not None:
        if cfg.dataset is not None:
            check_shape(cfg.dataset, cfg.input_shape)
        return InputSpec(cfg.input_shape, "--input-shape")
    name = cfg.resolved_dataset()
    ds = dataset_spec(name)
    spec = ZOO.get(cfg.model)
    if cfg.input_size is not None:
        side, origin = cfg.input_size, f"--input-size {cfg.input_size} on dataset {name}"
    elif spec is not None and spec.input_size is not None:
        side, origin = spec.input_size, f"{cfg.model}'s native size on dataset {name}"
    else:
        side, origin = ds.size, f"dataset {name}'s native size"
    shape = (ds.channels, side, side)
    check_shape(name, shape)
    return InputSpec(shape, origin)


def check_model_name(model: str) -> None:
    """A zoo name or ``package.module:callable``."""
    if model not in ZOO and ":" not in model:
        raise ModelError(f"unknown model '{model}'; choose one of {', '.join(sorted(ZOO))} or package.module:callable")


def model_classes(cfg: WorkloadConfig) -> int:
    """The classifier size to build ``cfg``'s model with when no data is loaded.

    A zoo model with a fixed head has it; one that follows its dataset needs the dataset's
    class count (an image folder's is read from its folder names); a user callable takes no
    arguments, so the value does not matter for it.
    """
    spec = ZOO.get(cfg.model)
    if spec is None:
        return 10
    if spec.classes is not None:
        return spec.classes
    name = cfg.resolved_dataset()
    classes = dataset_classes(name, cfg.data_root)
    if classes is None:
        raise DataError(f"{cfg.model}'s classifier has one output per class of {name}: pass --data-root DIR to count them")
    return classes


def discover(model: nn.Module, inp: InputSpec) -> list[LayerInfo]:
    """The model's layers at ``inp``; a forward pass that fails says where the shape came from."""
    try:
        return discover_layers(model, inp.shape)
    except ModelError as exc:
        if "forward pass" not in str(exc):
            raise
        raise ModelError(
            f"{exc} (input {inp.text} from {inp.origin}); give the shape the model expects with "
            "--input-shape C,H,W, or --dataset / --input-size"
        ) from None


def untrained_model(cfg: WorkloadConfig) -> tuple[nn.Module, InputSpec]:
    """A seeded, untrained instance of the model in eval mode and its resolved input (no data read)."""
    check_model_name(cfg.model)
    inp = resolve_input(cfg)
    classes = model_classes(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_model(cfg.model, inp.shape, classes).eval(), inp


def workload_layers(cfg: WorkloadConfig) -> list[LayerInfo]:
    """The quantizable layers of ``cfg``'s model at its resolved input: shapes only, nothing trained."""
    net, inp = untrained_model(cfg)
    return discover(net, inp)


def sample_inputs(cfg: WorkloadConfig, inp: InputSpec, n: int) -> torch.Tensor:
    """``n`` inputs to calibrate an export: the dataset's first training images where it can be
    read without more settings, else seeded random images (latency does not depend on values)."""
    name = cfg.resolved_dataset()
    readable = cfg.data_root is not None or not dataset_spec(name).local
    if readable and (cfg.input_shape is None or cfg.dataset is not None):
        return load_dataset(name, cfg.data_root, cfg.seed, inp.shape, cfg.workers).subset("train", n)[0]
    gen = torch.Generator().manual_seed(cfg.seed)
    return torch.rand((n, *inp.shape), generator=gen)


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
    """Resolve the input, load the data at it, load / train / fine-tune (cached) the float
    weights, discover layers."""
    check_model_name(cfg.model)
    name = cfg.resolved_dataset()
    if cfg.input_shape is not None and cfg.dataset is None and cfg.input_shape[0] != dataset_spec(name).channels:
        raise ConfigError(
            f"--input-shape {','.join(map(str, cfg.input_shape))} prices the model without data, but this command "
            f"trains or evaluates it on {name} ({dataset_spec(name).channels} channel(s)): name the data with "
            "--dataset (e.g. --dataset imagefolder --data-root DIR) and --input-size"
        )
    inp = resolve_input(cfg)
    data = load_dataset(name, cfg.data_root, cfg.seed, inp.shape, cfg.workers)
    spec = ZOO.get(cfg.model)
    if spec is not None and spec.classes is not None and data.num_classes > spec.classes:
        raise DataError(
            f"{data.name} has {data.num_classes} classes but {cfg.model} has {spec.classes} outputs; "
            "use a user model (package.module:callable) with a head of that size"
        )
    with torch.random.fork_rng(devices=[]):  # the shape is checked before any training, with a one-line error
        discover(build_model(cfg.model, inp.shape, data.num_classes), inp)
    model = _float_model(cfg, data, device, cache_dir, log)
    return Workload(cfg, model, data, discover(model, inp), device)


def _recipe(cfg: WorkloadConfig) -> TrainConfig:
    spec = ZOO.get(cfg.model)
    recipe = replace(spec.train if spec is not None else USER_RECIPE, seed=cfg.seed)
    return recipe if cfg.train_epochs is None else replace(recipe, epochs=cfg.train_epochs)


def _float_model(
    cfg: WorkloadConfig, data: DataSplits, device: torch.device, cache_dir: Path | None, log: Log | None
) -> nn.Module:
    """The float weights: a checkpoint (optionally fine-tuned on the data), or trained here."""
    recipe = _recipe(cfg)
    if cfg.checkpoint is not None:
        if cfg.finetune_epochs is not None:
            tune = replace(recipe, epochs=cfg.finetune_epochs, lr=recipe.lr * FINETUNE_LR_SCALE)
            return pretrained_model(cfg.model, data, device, cache_dir, tune, log, start=Path(cfg.checkpoint))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = build_model(cfg.model, data.input_shape, data.num_classes)
        return load_checkpoint_(model, cfg.checkpoint).to(device).eval()
    if cfg.model not in ZOO and cfg.train_epochs is None:
        raise ModelError(
            f"user model '{cfg.model}' has no weights: pass --checkpoint FILE (a float state dict), "
            "or --train-epochs N to train it here with the zoo's recipe"
        )
    return pretrained_model(cfg.model, data, device, cache_dir, recipe, log)
