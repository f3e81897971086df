"""Drop-in quantized ``Conv2d`` / ``Linear`` that carry their own ``w_bits`` / ``a_bits``.

``a_bits`` quantizes the layer's *input* activations (what the multiply-accumulate consumes),
so a layer's cost on a bit-serial device depends on exactly its own ``(w_bits, a_bits)``.
The input grid is unsigned when calibration saw no negative input (after ReLU) and signed
otherwise. The clip ``alpha`` is a parameter: frozen by default, trainable PACT-style with
``learn_alpha=True``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from haq.core.errors import HaqError
from haq.quant.primitives import (
    FLOAT_BITS,
    check_bits,
    quantize_activation,
    quantize_weight,
)


class _QuantMixin:
    """State and behaviour shared by the quantized layers."""

    weight: nn.Parameter
    w_bits: int
    a_bits: int
    per_channel: bool
    act_alpha: nn.Parameter
    act_signed: torch.Tensor
    calibrated: torch.Tensor
    _observing: bool
    _obs_min: float
    _obs_max: float
    _layer_name: str

    def __init__(
        self,
        *args: Any,
        w_bits: int = FLOAT_BITS,
        a_bits: int = FLOAT_BITS,
        per_channel: bool = True,
        learn_alpha: bool = False,
        **kwargs: Any,
    ) -> None:
        """Layer arguments go to the torch base class; the quantization keywords stay here."""
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._init_quant(w_bits, a_bits, per_channel, learn_alpha)

    def _init_quant(self, w_bits: int, a_bits: int, per_channel: bool, learn_alpha: bool) -> None:
        self.w_bits = check_bits(w_bits, "w_bits")
        self.a_bits = check_bits(a_bits, "a_bits")
        self.per_channel = per_channel
        device = self.weight.device
        self.act_alpha = nn.Parameter(torch.ones((), device=device), requires_grad=learn_alpha)
        self.register_buffer("act_signed", torch.zeros((), dtype=torch.bool, device=device))  # type: ignore[attr-defined]
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool, device=device))  # type: ignore[attr-defined]
        self._observing = False
        self._obs_min = float("inf")
        self._obs_max = float("-inf")
        self._layer_name = ""

    def set_bits(self, w_bits: int, a_bits: int) -> None:
        """Change the precision in place (validated)."""
        self.w_bits = check_bits(w_bits, "w_bits")
        self.a_bits = check_bits(a_bits, "a_bits")

    def set_learn_alpha(self, learn: bool) -> None:
        """Switch PACT-style training of the activation clip on or off."""
        self.act_alpha.requires_grad_(learn)

    def start_observing(self) -> None:
        """Record the input range of the following forward passes (used by calibration)."""
        self._observing = True
        self._obs_min = float("inf")
        self._obs_max = float("-inf")

    def finish_observing(self) -> None:
        """Set ``alpha`` and signedness from what was observed."""
        self._observing = False
        if self._obs_max == float("-inf"):
            raise HaqError(f"layer '{self._layer_name}' saw no input during calibration")
        signed = self._obs_min < 0.0
        alpha = max(abs(self._obs_min), self._obs_max) if signed else self._obs_max
        with torch.no_grad():
            self.act_alpha.fill_(max(alpha, 1e-8))
            self.act_signed.fill_(signed)
            self.calibrated.fill_(True)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize the input at ``a_bits`` (identity at 32 bits)."""
        if self._observing:
            self._obs_min = min(self._obs_min, float(x.detach().amin()))
            self._obs_max = max(self._obs_max, float(x.detach().amax()))
            return x
        if self.a_bits == FLOAT_BITS:
            return x
        if not bool(self.calibrated):
            raise HaqError(
                f"layer '{self._layer_name}' quantizes activations to {self.a_bits} bits but was "
                "never calibrated; call haq.quant.calibrate_(model, batches) first"
            )
        return quantize_activation(x, self.a_bits, self.act_alpha, bool(self.act_signed))

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight used in the forward pass."""
        return quantize_weight(self.weight, self.w_bits, self.per_channel)

    def extra_repr(self) -> str:  # noqa: D102 - shown in print(model)
        base = super().extra_repr()  # type: ignore[misc]
        return f"{base}, w_bits={self.w_bits}, a_bits={self.a_bits}"


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` (plain, depthwise or grouped) with fake-quantized weights and input."""

    @classmethod
    def from_float(cls, m: nn.Conv2d, w_bits: int, a_bits: int, per_channel: bool = True) -> "QuantConv2d":
        """Wrap an existing conv, sharing its parameters (no copy)."""
        q = cls(
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            dilation=m.dilation,
            groups=m.groups,
            bias=m.bias is not None,
            padding_mode=m.padding_mode,
            w_bits=w_bits,
            a_bits=a_bits,
            per_channel=per_channel,
            device=m.weight.device,
            dtype=m.weight.dtype,
        )
        q.weight = m.weight
        q.bias = m.bias
        q.train(m.training)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantize_input(x), self.quantized_weight(), self.bias)


class QuantLinear(_QuantMixin, nn.Linear):
    """``nn.Linear`` with fake-quantized weights and input."""

    @classmethod
    def from_float(cls, m: nn.Linear, w_bits: int, a_bits: int, per_channel: bool = True) -> "QuantLinear":
        """Wrap an existing linear layer, sharing its parameters (no copy)."""
        q = cls(
            m.in_features,
            m.out_features,
            bias=m.bias is not None,
            w_bits=w_bits,
            a_bits=a_bits,
            per_channel=per_channel,
            device=m.weight.device,
            dtype=m.weight.dtype,
        )
        q.weight = m.weight
        q.bias = m.bias
        q.train(m.training)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantize_input(x), self.quantized_weight(), self.bias)


QuantModule = (QuantConv2d, QuantLinear)
QUANTIZABLE_TYPES = (nn.Conv2d, nn.Linear)
