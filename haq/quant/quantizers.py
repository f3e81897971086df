"""Quantizers as modules: what a quantized layer injects for its weight and for its input.

Each quantizer owns its bit width (validated on every change) and whatever state its grid
needs; the layer that holds it states only its own operation. ``bits == FLOAT_BITS`` makes a
quantizer the identity, so a model under an all-float policy computes exactly the float model.
"""

from __future__ import annotations

import torch
from torch import nn

from haq.core.errors import ModelError, UsageError
from haq.quant.primitives import FLOAT_BITS, check_bits, quantize_activation, quantize_weight

_MIN_ALPHA = 1e-8


class WeightQuantizer(nn.Module):
    """Symmetric fake-quantization of a weight (per output channel or per tensor), STE gradient.

    Stateless besides its settings: the grid is recomputed from the latent float weight on
    every call, so fine-tuning moves the grid with the weights.
    """

    def __init__(self, bits: int = FLOAT_BITS, per_channel: bool = True) -> None:
        super().__init__()
        self._bits = check_bits(bits, "w_bits")
        self.per_channel = per_channel

    @property
    def bits(self) -> int:
        """Weight bit width (32 = float)."""
        return self._bits

    @bits.setter
    def bits(self, value: int) -> None:
        self._bits = check_bits(value, "w_bits")

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return quantize_weight(w, self._bits, self.per_channel)

    def extra_repr(self) -> str:
        return f"bits={self._bits}, per_channel={self.per_channel}"


class InputQuantizer(nn.Module):
    """Fake-quantization of a layer's input on a calibrated clip ``[0, alpha]`` or ``[-alpha, alpha]``.

    The grid is unsigned when calibration saw no negative input (after ReLU) and signed
    otherwise. ``alpha`` is a parameter: frozen by default, trainable PACT-style with
    ``learn_alpha=True``. Calibration: between :meth:`start_observing` and
    :meth:`stop_observing` inputs pass through unquantized while their range is recorded;
    :meth:`commit_observed` then sets ``alpha`` and the signedness from that range.
    """

    alpha: nn.Parameter
    signed: torch.Tensor
    calibrated: torch.Tensor

    def __init__(
        self, bits: int = FLOAT_BITS, learn_alpha: bool = False, layer: str = "", device: torch.device | None = None
    ) -> None:
        super().__init__()
        self._bits = check_bits(bits, "a_bits")
        self.layer = layer
        self.alpha = nn.Parameter(torch.ones((), device=device), requires_grad=learn_alpha)
        self.register_buffer("signed", torch.zeros((), dtype=torch.bool, device=device))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool, device=device))
        self._observing = False
        self._seen_min = float("inf")
        self._seen_max = float("-inf")

    @property
    def bits(self) -> int:
        """Input-activation bit width (32 = float)."""
        return self._bits

    @bits.setter
    def bits(self, value: int) -> None:
        self._bits = check_bits(value, "a_bits")

    def start_observing(self) -> None:
        """Record the input range of the following forward passes, which pass inputs unquantized."""
        self._observing = True
        self._seen_min = float("inf")
        self._seen_max = float("-inf")

    def stop_observing(self) -> None:
        """Quantize again; what was recorded is kept for :meth:`commit_observed`."""
        self._observing = False

    def commit_observed(self) -> None:
        """Set ``alpha`` and the signedness from the recorded range; the quantizer is then calibrated."""
        if self._seen_max == float("-inf"):
            raise ModelError(f"layer '{self.layer}' saw no input during calibration; the model's forward() never calls it")
        signed = self._seen_min < 0.0
        alpha = max(abs(self._seen_min), self._seen_max) if signed else self._seen_max
        with torch.no_grad():
            self.alpha.fill_(max(alpha, _MIN_ALPHA))
            self.signed.fill_(signed)
            self.calibrated.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._observing:
            self._seen_min = min(self._seen_min, float(x.detach().amin()))
            self._seen_max = max(self._seen_max, float(x.detach().amax()))
            return x
        if self._bits == FLOAT_BITS:
            return x
        if not bool(self.calibrated):
            raise UsageError(
                f"layer '{self.layer}' quantizes activations to {self._bits} bits but was "
                "never calibrated; call haq.quant.calibrate_(model, batches) first"
            )
        return quantize_activation(x, self._bits, self.alpha, bool(self.signed))

    def extra_repr(self) -> str:
        return f"bits={self._bits}, learn_alpha={self.alpha.requires_grad}"
