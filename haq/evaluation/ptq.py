"""Quantize a copy of a float model under a policy and measure its accuracy (no fine-tuning)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from haq.data import DataSplits
from haq.quant.calibrate import calibrate_
from haq.quant.discovery import LayerInfo
from haq.quant.policy import QuantPolicy, apply_policy_, model_size_bits
from haq.training import accuracy


@dataclass(frozen=True)
class QuantResult:
    """Accuracy and weight size of one policy."""

    accuracy: float
    size_bits: int


def quantized_copy(
    model: nn.Module,
    policy: QuantPolicy,
    data: DataSplits,
    device: torch.device,
    calib_batches: int = 4,
    batch_size: int = 128,
) -> nn.Module:
    """A deep copy of ``model`` with ``policy`` applied and activations calibrated on train data."""
    q = apply_policy_(copy.deepcopy(model), policy)
    x, _ = data.subset("train", calib_batches * batch_size)
    calibrate_(q, x.split(batch_size), device, max_batches=calib_batches)
    return q.eval()


def evaluate_policy_ptq(
    model: nn.Module,
    layers: list[LayerInfo],
    policy: QuantPolicy,
    data: DataSplits,
    device: torch.device,
    split: str = "test",
) -> QuantResult:
    """Post-training quantization accuracy of ``policy`` on ``split``, and weight size."""
    q = quantized_copy(model, policy, data, device)
    x, y = data.subset(split, None)
    return QuantResult(accuracy(q, x, y, device), model_size_bits(layers, policy))
