"""Pure linear-quantization primitives with a straight-through estimator (STE).

All functions are side-effect free and work on any device. ``bits == FLOAT_BITS`` (32) means
"leave in floating point". Bit widths 1..8 are supported; 1 bit is handled explicitly so that no
scale divides by zero:

* weights, 1 bit: ``sign(w) * mean(|w|)`` per output channel (binary, XNOR-Net style);
* weights, b >= 2: symmetric, ``2^(b-1) - 1`` positive levels, per output channel or per tensor;
* activations, unsigned: ``2^b - 1`` levels on ``[0, alpha]`` (1 bit: ``{0, alpha}``);
* activations, signed: ``2^(b-1) - 1`` levels each side on ``[-alpha, alpha]``
  (1 bit: ``{-alpha, +alpha}``).

The STE passes the gradient through rounding unchanged inside the clip range and blocks it
outside (the clamp's own gradient does that), which is what quantization-aware training and
white-box attacks "through the STE" rely on.
"""

from __future__ import annotations

import math

import torch

from haq.core.errors import PolicyError

FLOAT_BITS = 32
MIN_BITS = 1
MAX_BITS = 8
_EPS = 1e-12


def check_bits(bits: object, what: str = "bits", *, allow_float: bool = True) -> int:
    """``bits`` if it is an int in 1..8 (or 32, float, when ``allow_float``), else a one-line
    :class:`PolicyError` naming ``what``.

    The single bit-width check of haq: quantizers, primitives, policy files and cost models use it.
    """
    valid = f"{MIN_BITS}..{MAX_BITS}" + (f" or {FLOAT_BITS} (float)" if allow_float else "")
    if isinstance(bits, bool) or not isinstance(bits, int):
        hint = f" (write {int(bits)})" if isinstance(bits, float) and math.isfinite(bits) and bits.is_integer() else ""
        raise PolicyError(f"{what} must be an integer in {valid}, got {bits!r}{hint}")
    if not (MIN_BITS <= bits <= MAX_BITS or (allow_float and bits == FLOAT_BITS)):
        raise PolicyError(f"{what}={bits} is out of range; use {valid}")
    return bits


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest with an identity gradient."""
    return x + (torch.round(x) - x).detach()


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """Sign in {-1, +1} (zero maps to +1) with an identity gradient."""
    s = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    return x + (s - x).detach()


def _reduce_abs(w: torch.Tensor, per_channel: bool, op: str) -> torch.Tensor:
    """max or mean of |w| over every dim but the first (per channel) or over all (per tensor)."""
    a = w.detach().abs()
    if per_channel and w.dim() > 1:
        flat = a.reshape(w.shape[0], -1)
        stat = flat.amax(dim=1) if op == "max" else flat.mean(dim=1)
        return stat.reshape((-1,) + (1,) * (w.dim() - 1))
    return a.amax() if op == "max" else a.mean()


def weight_scale(w: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """Step size of the symmetric weight grid (for 1 bit: the binary magnitude)."""
    check_bits(bits, "w_bits")
    if bits == 1:
        return _reduce_abs(w, per_channel, "mean").clamp_min(_EPS)
    qmax = 2 ** (bits - 1) - 1
    return (_reduce_abs(w, per_channel, "max") / qmax).clamp_min(_EPS)


def quantize_weight(w: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """Fake-quantize weights symmetrically (STE gradient); ``bits == 32`` returns ``w``."""
    check_bits(bits, "w_bits")
    if bits == FLOAT_BITS:
        return w
    scale = weight_scale(w, bits, per_channel)
    if bits == 1:
        return sign_ste(w) * scale
    qmax = 2 ** (bits - 1) - 1
    return round_ste(torch.clamp(w / scale, -qmax, qmax)) * scale


def activation_levels(bits: int, signed: bool) -> int:
    """Number of positive quantization levels of an activation grid."""
    check_bits(bits, "a_bits")
    if signed:
        return max(2 ** (bits - 1) - 1, 1)
    return 2**bits - 1


def quantize_activation(x: torch.Tensor, bits: int, alpha: torch.Tensor | float, signed: bool) -> torch.Tensor:
    """Fake-quantize activations on ``[0, alpha]`` or ``[-alpha, alpha]``.

    The gradient flows to ``x`` inside the clip range (STE) and to ``alpha`` when it is a
    tensor that requires grad (PACT-style learned clipping).
    """
    check_bits(bits, "a_bits")
    if bits == FLOAT_BITS:
        return x
    alpha_t = torch.as_tensor(alpha, dtype=x.dtype, device=x.device).clamp_min(_EPS)
    if signed and bits == 1:
        return sign_ste(x) * alpha_t
    lo = -alpha_t if signed else torch.zeros_like(alpha_t)
    clipped = torch.maximum(torch.minimum(x, alpha_t), lo)
    step = alpha_t / activation_levels(bits, signed)
    return round_ste(clipped / step) * step


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (higher is better)."""
    noise = (reference - approx).double().pow(2).sum()
    signal = reference.double().pow(2).sum()
    if noise.item() == 0.0:
        return float("inf")
    return float(10.0 * torch.log10(signal / noise))
