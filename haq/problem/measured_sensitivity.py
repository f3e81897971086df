"""Per-layer sensitivity measured one layer at a time, on clean and adversarial images.

The Fisher estimate (:func:`haq.problem.sensitivity.estimate_sensitivity`) is a second-order
expansion of the clean loss around a trained minimum: quantization can only add loss there. A
reward with a robustness term asks something it cannot answer, because on adversarial images
the float model is far from any minimum and quantization can *remove* loss: coarse input
activations snap an L∞ perturbation back onto the clean image. On the digits models the policies
that score best under the full evaluator all quantize the first layer's input to 2 bits, which
the Fisher ILP prices as its costliest choice.

So this estimator measures instead: quantize one layer's weights (or its input) at one width,
everything else float, and record how much the mean cross-entropy changes on the clean images
and on PGD examples crafted once on the float model, weighted as the reward weighs clean and
robust accuracy (``acc_weight · ΔL_clean + robust_weight · ΔL_adv``). The changes may be
negative. It costs two forward passes per layer and width, against one backward pass per batch
for the Fisher estimate, and treats layers as additive, as the ILP does.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from haq.core.errors import InternalError
from haq.core.types import Log
from haq.data import DataSplits, iterate_batches
from haq.problem.sensitivity import (
    BITS,
    LayerSensitivity,
    Sensitivity,
    SensitivityConfig,
    hook_inputs,
    input_ranges,
    layer_modules,
)
from haq.quant import FLOAT_BITS, LayerInfo, quantize_activation, quantize_weight
from haq.robust import AttackConfig, pgd
from haq.training import torch_threads
from haq.workload import Workload


@dataclass(frozen=True)
class LossWeights:
    """How the measured loss changes add up: per unit of clean and of adversarial loss, and the
    attack that crafts the adversarial images (``None``: clean loss only)."""

    clean: float
    adversarial: float = 0.0
    attack: AttackConfig | None = None


def measure_sensitivity(
    model: nn.Module,
    layers: list[LayerInfo],
    data: DataSplits,
    device: torch.device,
    weights: LossWeights,
    cfg: SensitivityConfig = SensitivityConfig(),
    log: Log | None = None,
    only: Sequence[str] | None = None,
) -> Sensitivity:
    """The weighted loss change of quantizing each layer alone, at each width (model untouched);
    ``log`` hears after each layer, since a deep model takes minutes (ResNet-20: about 3). ``only``
    measures those layers and no others (a worker's share): each layer's figures are the same
    whichever others are measured beside it."""
    net = copy.deepcopy(model).to(device).eval()
    modules = layer_modules(net, layers)
    wanted = None if only is None else set(only)
    chosen = [n for n in modules if wanted is None or n in wanted]
    x, y = data.subset("train", cfg.samples)
    x, y = x.to(device), y.to(device)
    sets = [(weights.clean, x)]
    with torch_threads(1):
        if weights.attack is not None and weights.adversarial != 0.0:
            sets.append((weights.adversarial, pgd(net, x, y, weights.attack, device, data.value_range)))
        ranges = input_ranges(net, modules, list(x.split(cfg.batch_size)))

        def loss() -> float:
            return sum(w * _mean_loss(net, xs, y, cfg.batch_size) for w, xs in sets)

        base = loss()
        out: dict[str, LayerSensitivity] = {}
        for i, name in enumerate(chosen, 1):
            module = modules[name]
            alpha, signed = ranges[name]
            w_err: dict[int, float] = {}
            a_err: dict[int, float] = {}
            for b in BITS:
                with _weights_at(module, b):
                    w_err[b] = loss() - base
                with _inputs_at(modules, name, b, alpha, signed):
                    a_err[b] = loss() - base
            out[name] = LayerSensitivity(weight={**w_err, FLOAT_BITS: 0.0}, activation={**a_err, FLOAT_BITS: 0.0})
            if log:
                log(f"measured sensitivity: layer {i}/{len(chosen)} ({name})")
    return Sensitivity(out, samples=len(y), estimator="measured")


def measure_share(workload: Workload, weights: LossWeights, cfg: SensitivityConfig, names: tuple[str, ...]) -> dict[str, Any]:
    """:func:`measure_sensitivity` of the layers ``names`` on ``workload``, as plain data
    (:meth:`Sensitivity.to_dict`): the work one worker does when the layers are spread over a pool
    (:func:`share_layers`)."""
    s = measure_sensitivity(workload.model, workload.layers, workload.data, workload.device, weights, cfg, only=names)
    return s.to_dict()


def share_layers(names: Sequence[str], workers: int) -> list[tuple[str, ...]]:
    """``names`` dealt round-robin to at most ``workers`` shares (none empty): neighbouring layers,
    often of like size, go to different workers."""
    n = max(1, min(workers, len(names)))
    return [tuple(names[i::n]) for i in range(n)]


def merge_shares(names: Sequence[str], shares: Sequence[dict[str, Any]]) -> Sensitivity:
    """The shares :func:`measure_share` returned, as one estimate over ``names`` in their order."""
    parts = [Sensitivity.from_dict(share) for share in shares]
    found = {name: layer for part in parts for name, layer in part.layers.items()}
    missing = [n for n in names if n not in found]
    if missing or not parts:
        raise InternalError(f"the workers' shares of the measured sensitivity lack layers {missing}")
    return Sensitivity({n: found[n] for n in names}, samples=parts[0].samples, estimator="measured")


@torch.no_grad()
def _mean_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    total = sum(float(F.cross_entropy(net(xb), yb, reduction="sum")) for xb, yb in iterate_batches(x, y, batch))
    return total / len(y)


@contextmanager
def _weights_at(module: nn.Module, bits: int) -> Iterator[None]:
    """``module``'s weights quantized at ``bits`` for the duration, restored after."""
    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    original = weight.detach().clone()
    with torch.no_grad():
        weight.copy_(quantize_weight(original, bits))
    try:
        yield
    finally:
        with torch.no_grad():
            weight.copy_(original)


@contextmanager
def _inputs_at(modules: dict[str, nn.Module], name: str, bits: int, alpha: float, signed: bool) -> Iterator[None]:
    """Layer ``name``'s input quantized at ``bits`` (clip ``alpha``, as calibration sets it)."""
    handles = hook_inputs({name: modules[name]}, lambda _, x: quantize_activation(x, bits, alpha, signed))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
