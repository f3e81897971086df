"""Small models for 8×8 digits: a CNN (the embedded default) and a deep MLP (for DQ studies)."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Three 3×3 convs and one classifier: 4 quantizable layers, ~19k weights, 8×8 input.

    The head flattens the 4×4 map instead of pooling it: on 8×8 digits the position of a
    stroke matters, and pooling cost about a point of accuracy.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1)
        self.fc = nn.Linear(2 * width * 16, num_classes)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.act(self.conv3(x))
        return self.fc(torch.flatten(x, 1))


class DigitsMLP(nn.Module):
    """64 → hidden × depth → 10 MLP: deep enough (7 quantizable layers) to show error amplification."""

    def __init__(self, in_features: int = 64, num_classes: int = 10, hidden: int = 256, depth: int = 6) -> None:
        super().__init__()
        dims = [in_features] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(hidden, num_classes)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        for layer in self.layers:
            x = self.act(layer(x))
        return self.head(x)
