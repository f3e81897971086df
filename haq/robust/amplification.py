"""Error amplification: how an input perturbation grows through the layers, and why.

``error_amplification`` hooks the OUTPUT of every conv / linear layer (quantized or not). A
quantized layer fake-quantizes its own input, so its output already shows whether the
perturbation moved activations into other quantization buckets; the pre-activation output
is also what the next non-linearity and quantizer see. Per layer the ratio is aggregated over
the batch, Σ‖Δx_l‖₂ / Σ‖x_l‖₂, which stays finite when single samples' activations are all
zero (a per-sample ratio would not).

``lipschitz_estimates`` gives σ_max of each layer's effective weight by power iteration: the
layer's Lipschitz constant for linear layers, and for convolutions the σ_max of the kernel
reshaped to (c_out, c_in·k·k) — the proxy the DQ regularizer controls, not the exact operator
norm of the convolution.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from haq.core.errors import ConfigError, DataError, ModelError
from haq.quant.layers import QUANTIZABLE_TYPES, QuantLayer
from haq.robust.attacks import frozen_eval


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QUANTIZABLE_TYPES)}
    if not layers:
        raise ModelError(f"model {type(model).__name__} has no Conv2d / Linear layer to measure")
    return layers


@torch.no_grad()
def _output_norms(model: nn.Module, x: torch.Tensor) -> tuple[list[str], dict[str, list[torch.Tensor]]]:
    """Per-sample flattened outputs of every layer, in execution order (reused layers appended)."""
    layers = _layers(model)
    order: list[str] = []
    outputs: dict[str, list[torch.Tensor]] = {}

    def hook_for(name: str):  # type: ignore[no-untyped-def]
        def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if name not in outputs:
                order.append(name)
                outputs[name] = []
            outputs[name].append(out.detach().flatten(1))

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in layers.items()]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return order, outputs


def error_amplification(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, device: torch.device, batch_size: int = 512
) -> dict[str, float]:
    """Relative perturbation Σ‖out_l(x_adv) − out_l(x)‖ / Σ‖out_l(x)‖ of every layer, in execution order."""
    if x.shape != x_adv.shape:
        raise DataError(f"clean and adversarial inputs differ in shape: {tuple(x.shape)} vs {tuple(x_adv.shape)}")
    if len(x) == 0:
        raise DataError("error_amplification needs at least one sample")
    diff_sum: dict[str, float] = {}
    norm_sum: dict[str, float] = {}
    order: list[str] = []
    with frozen_eval([model]):
        for i in range(0, len(x), batch_size):
            names, clean = _output_norms(model, x[i : i + batch_size].to(device))
            _, adv = _output_norms(model, x_adv[i : i + batch_size].to(device))
            order = order or names
            for n in names:
                c, a = torch.cat(clean[n], 1), torch.cat(adv[n], 1)
                diff_sum[n] = diff_sum.get(n, 0.0) + float((a - c).norm(dim=1).sum())
                norm_sum[n] = norm_sum.get(n, 0.0) + float(c.norm(dim=1).sum())
    return {n: relative_perturbation(diff_sum[n], norm_sum[n]) for n in order}


def lipschitz_estimates(model: nn.Module, iters: int = 100, seed: int = 0) -> dict[str, float]:
    """σ_max of every conv / linear layer's effective (fake-quantized, if quantized) weight."""
    out: dict[str, float] = {}
    for name, m in _layers(model).items():
        with torch.no_grad():
            w = m.quantized_weight() if isinstance(m, QuantLayer) else m.weight
            out[name] = spectral_norm(w.detach().flatten(1), iters, seed)
    return out


def relative_perturbation(diff_norm_sum: float, clean_norm_sum: float) -> float:
    """Σ‖Δ‖ / Σ‖x‖, with 0/0 = 0 and d/0 = inf (a perturbation of an all-zero layer)."""
    if clean_norm_sum == 0.0:
        return 0.0 if diff_norm_sum == 0.0 else math.inf
    return diff_norm_sum / clean_norm_sum


def spectral_norm(w: torch.Tensor, iters: int = 100, seed: int = 0, tol: float = 1e-7) -> float:
    """Largest singular value of a 2-D matrix by power iteration on WᵀW (seeded start)."""
    if w.dim() != 2:
        raise ModelError(f"spectral_norm needs a 2-D matrix, got shape {tuple(w.shape)}")
    if iters < 1:
        raise ConfigError(f"power iteration needs iters >= 1, got {iters}")
    w = w.detach().double().cpu()
    v = torch.randn(w.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    v = v / v.norm().clamp_min(1e-300)
    sigma = 0.0
    for _ in range(iters):
        u = w @ v
        u_norm = float(u.norm())
        if u_norm == 0.0:
            return 0.0
        v_new = w.T @ (u / u_norm)
        new_sigma = float(v_new.norm())
        v = v_new / new_sigma
        if abs(new_sigma - sigma) <= tol * max(new_sigma, 1e-300):
            return new_sigma
        sigma = new_sigma
    return sigma
