"""The model zoo: each built-in model by name, with its dataset and training recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from haq.models.digits import DigitsCNN, DigitsMLP
from haq.models.mobilenet import MobileNetV2Small
from haq.models.resnet import ResNet20
from haq.training import TrainConfig

Factory = Callable[[int, int], nn.Module]
"""Builds a fresh model from (input channels, number of classes)."""


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
    """Names accepted by :func:`haq.models.build_model` besides ``package.module:callable`` paths."""
    return sorted(ZOO)
