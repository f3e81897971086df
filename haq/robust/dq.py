"""Defensive Quantization (Lin, Gan, Han, ICLR 2019): keep every layer near-orthogonal while the
model trains under its quantization policy, so input noise is not amplified layer by layer.

Loss = cross-entropy + (β/2) · Σ_l ‖G_l − I‖²_F, where G_l is the smaller Gram matrix of the
layer's latent (float) weight reshaped to (c_out, c_in·k·k): W Wᵀ when c_out ≤ c_in·k², else
Wᵀ W. The forward pass is the quantized one (weights and input activations fake-quantized, STE
gradients), so the fine-tuning adapts to whatever :class:`~haq.quant.QuantPolicy` is applied.
``beta = 0`` is plain quantization-aware fine-tuning, the fair "vanilla" baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from haq.core import validate
from haq.core.errors import ModelError, UsageError
from haq.data.splits import DataSplits
from haq.quant.calibrate import quant_layers
from haq.quant.layers import QUANTIZABLE_TYPES
from haq.quant.primitives import FLOAT_BITS
from haq.training import Progress, TrainConfig, train_model


@dataclass(frozen=True)
class DQConfig:
    """DQ fine-tuning hyper-parameters.

    beta: weight of the orthogonal penalty (β/2 · Σ‖G − I‖²); 0 gives plain QAT.
    epochs: passes over the training split.
    lr: Adam learning rate (cosine-annealed to 0).
    batch_size: mini-batch size.
    learn_alpha: also train each quantized layer's activation clip (PACT); the flag itself is
        restored afterwards, the learned clips are kept.
    max_batches: cap on mini-batches per epoch (``None``: the whole split) for quick search use.
    seed: seeds the shuffling and augmentation.
    """

    beta: float = 3e-3
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 64
    learn_alpha: bool = False
    max_batches: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        validate.finite("DQ beta", self.beta, low=0.0)
        validate.count("DQ epochs", self.epochs, low=0)
        validate.positive("DQ lr", self.lr)
        validate.count("DQ batch_size", self.batch_size)
        if self.max_batches is not None:
            validate.count("DQ max_batches", self.max_batches)


def orthogonal_penalty(model: nn.Module) -> torch.Tensor:
    """Σ over conv / linear layers of ‖G − I‖²_F (smaller Gram of the reshaped latent weight).

    Multiply by β/2 for the DQ loss. Differentiable with respect to the weights.
    """
    weights = [m.weight for m in model.modules() if isinstance(m, QUANTIZABLE_TYPES)]
    if not weights:
        raise ModelError(f"model {type(model).__name__} has no Conv2d / Linear weight to regularize")
    return torch.stack([gram_penalty(w) for w in weights]).sum()


def _check_ready(model: nn.Module) -> None:
    """Quantized activations need calibrated clips before any training step."""
    for name, m in quant_layers(model).items():
        if m.a_bits != FLOAT_BITS and not bool(m.input_quant.calibrated):
            raise UsageError(
                f"layer '{name}' quantizes activations but is not calibrated; call haq.quant.calibrate_ before dq_finetune_"
            )


def dq_finetune_(
    model: nn.Module, data: DataSplits, cfg: DQConfig, device: torch.device, progress: Progress | None = None
) -> nn.Module:
    """Fine-tune ``model`` in place with cross-entropy + (β/2)·orthogonal penalty; returns it in eval mode.

    Works on float models and on models under any policy (apply_policy_ and calibrate_ first).
    """
    _check_ready(model)
    model.to(device)
    alphas = [m.input_quant.alpha for m in quant_layers(model).values()]
    alpha_flags = [a.requires_grad for a in alphas]
    for a in alphas:
        a.requires_grad_(cfg.learn_alpha)
    try:
        recipe = TrainConfig(
            epochs=cfg.epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            weight_decay=0.0,
            seed=cfg.seed,
            threads=None,
            max_batches=cfg.max_batches,
        )
        penalty = (lambda m: 0.5 * cfg.beta * orthogonal_penalty(m)) if cfg.beta > 0 else None
        train_model(model, data, recipe, device, extra_loss=penalty, progress=progress)
    finally:
        for a, flag in zip(alphas, alpha_flags):
            a.requires_grad_(flag)
    return model.eval()


def gram_penalty(w: torch.Tensor) -> torch.Tensor:
    """‖G − I‖²_F of one weight, reshaped to (c_out, rest), using the smaller Gram matrix."""
    mat = w.flatten(1) if w.dim() > 1 else w[None, :]
    gram = mat @ mat.T if mat.shape[0] <= mat.shape[1] else mat.T @ mat
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return (gram - eye).pow(2).sum()
