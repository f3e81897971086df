"""The model zoo: each built-in model by name, with its dataset, input size and training recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from haq.models.digits import DigitsCNN, DigitsMLP
from haq.models.mobilenet import MobileNetV2, MobileNetV2Small
from haq.models.resnet import ResNet18, ResNet20
from haq.training import TrainConfig

Factory = Callable[[int, int], nn.Module]
"""Builds a fresh model from (input channels, number of classes)."""

IMAGENET_CLASSES = 1000

USER_RECIPE = TrainConfig(epochs=15, lr=3e-3)
"""The zoo's recipe for a user model trained here (``--train-epochs`` sets the epochs)."""


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry.

    factory: builds it from (input channels, classes of the dataset).
    dataset: the dataset it is meant for (used when none is named).
    train: its training recipe.
    description: one line for help texts.
    input_size: its native input side (``None``: whatever the dataset delivers).
    classes: a fixed classifier size (ImageNet's 1000, so torchvision checkpoints load as
        they are; a dataset's labels then index its first classes), ``None`` to follow the dataset.
    """

    name: str
    factory: Factory
    dataset: str
    train: TrainConfig
    description: str
    input_size: int | None = None
    classes: int | None = None


ZOO: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            "digits_cnn",
            lambda c, k: DigitsCNN(c, k),
            "digits",
            TrainConfig(epochs=40, lr=2e-3, batch_size=32, weight_decay=5e-4),
            "3 conv + 1 FC for 8×8 digits (the embedded default)",
            input_size=8,
        ),
        ModelSpec(
            "digits_mlp",
            lambda c, k: DigitsMLP(c * 64, k),
            "digits",
            TrainConfig(epochs=40, lr=1e-3),
            "64→256×6→10 MLP (7 linear layers) for robustness studies",
            input_size=8,
        ),
        ModelSpec(
            "resnet20",
            lambda c, k: ResNet20(c, k),
            "digits32",
            TrainConfig(epochs=15, lr=3e-3),
            "ResNet-20 (CIFAR style, 24 quantizable layers) for 32×32",
            input_size=32,
        ),
        ModelSpec(
            "mobilenetv2",
            lambda c, k: MobileNetV2Small(c, k),
            "digits32",
            TrainConfig(epochs=15, lr=3e-3),
            "MobileNetV2-style net with depthwise convs for 32×32",
            input_size=32,
        ),
        ModelSpec(
            "resnet18",
            lambda c, _k: ResNet18(c, IMAGENET_CLASSES),
            "imagefolder",
            TrainConfig(epochs=15, lr=1e-3, batch_size=32),
            "ResNet-18 for 224×224 (21 quantizable layers; torchvision's state-dict keys)",
            input_size=224,
            classes=IMAGENET_CLASSES,
        ),
        ModelSpec(
            "mobilenet_v2",
            lambda c, _k: MobileNetV2(c, IMAGENET_CLASSES),
            "imagefolder",
            TrainConfig(epochs=15, lr=1e-3, batch_size=32),
            "MobileNetV2 for 224×224 (53 quantizable layers, as HAQ's tables; torchvision's keys)",
            input_size=224,
            classes=IMAGENET_CLASSES,
        ),
    )
}


def model_names() -> list[str]:
    """Names accepted by :func:`haq.models.build_model` besides ``package.module:callable`` paths."""
    return sorted(ZOO)
