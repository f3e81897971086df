"""Calibration: set each quantized layer's activation clip from a few batches of real data."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from haq.core.errors import UsageError
from haq.quant.layers import QuantLayer


def quant_layers(model: nn.Module) -> dict[str, QuantLayer]:
    """The model's quantized layers by fully-qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLayer)}


@torch.no_grad()
def calibrate_(
    model: nn.Module,
    batches: Iterable[torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]],
    device: torch.device,
    max_batches: int = 4,
) -> nn.Module:
    """Observe the float input range of every quantized layer and set ``alpha`` to its max.

    Inputs are observed unquantized (all layers pass through while observing), so the result
    does not depend on the order layers are calibrated in. Accepts tensors or ``(x, y)`` tuples.
    """
    layers = quant_layers(model)
    if not layers:
        raise UsageError("model has no quantized layers; call apply_policy_ before calibrate_")
    was_training = model.training
    model.eval()
    quantizers = [m.input_quant for m in layers.values()]
    for q in quantizers:
        q.start_observing()
    seen = 0
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))
            seen += 1
            if seen >= max_batches:
                break
    finally:
        for q in quantizers:
            q.stop_observing()
        model.train(was_training)
    if seen == 0:
        raise UsageError("calibration received no batches")
    for q in quantizers:
        q.commit_observed()
    return model
