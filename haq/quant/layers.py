"""Drop-in quantized ``Conv2d`` / ``Linear``: the torch layer plus two injected quantizers.

Every quantized layer holds a :class:`~haq.quant.quantizers.WeightQuantizer` (``weight_quant``)
and an :class:`~haq.quant.quantizers.InputQuantizer` (``input_quant``). ``a_bits`` quantizes
the layer's *input* activations (what the multiply-accumulate consumes), so a layer's cost on a
bit-serial device depends on exactly its own ``(w_bits, a_bits)``. Wrapping a float layer,
bit widths and the forward pass live once in :class:`QuantLayer`; each concrete layer states
only what is its own: the constructor arguments of its float twin and its operation.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from haq.core.errors import ModelError
from haq.quant.primitives import FLOAT_BITS
from haq.quant.quantizers import InputQuantizer, WeightQuantizer

Q = TypeVar("Q", bound="QuantLayer")

_LEGACY_KEYS = {"act_alpha": "input_quant.alpha", "act_signed": "input_quant.signed", "calibrated": "input_quant.calibrated"}
"""State-dict keys of quantized layers before the quantizers became child modules."""


class QuantLayer:
    """What every quantized layer shares; mixed in before its torch base class."""

    FLOAT_TYPE: ClassVar[type[nn.Module]]
    weight: nn.Parameter
    bias: nn.Parameter | None
    weight_quant: WeightQuantizer
    input_quant: InputQuantizer

    def __init__(
        self,
        *args: Any,
        w_bits: int = FLOAT_BITS,
        a_bits: int = FLOAT_BITS,
        per_channel: bool = True,
        learn_alpha: bool = False,
        **kwargs: Any,
    ) -> None:
        """Layer arguments go to the torch base class; the quantization keywords build the quantizers."""
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.weight_quant = WeightQuantizer(w_bits, per_channel)
        self.input_quant = InputQuantizer(a_bits, learn_alpha, device=self.weight.device)

    @classmethod
    def from_float(cls: type[Q], m: nn.Module, w_bits: int, a_bits: int, per_channel: bool = True, name: str = "") -> Q:
        """Wrap an existing float layer, sharing its parameters (no copy); ``name`` labels its errors."""
        if not isinstance(m, cls.FLOAT_TYPE):
            raise ModelError(f"{cls.__name__}.from_float needs an nn.{cls.FLOAT_TYPE.__name__}, got {type(m).__name__}")
        # the twin's own initialization is thrown away: it must not advance the caller's random streams
        # (a search's agent samples from them, so its log would depend on which evaluations were cached)
        cuda = [m.weight.device] if m.weight.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            q = cls(
                **cls._float_kwargs(m),
                w_bits=w_bits,
                a_bits=a_bits,
                per_channel=per_channel,
                device=m.weight.device,
                dtype=m.weight.dtype,
            )
        q.weight = m.weight
        q.bias = m.bias
        q.train(m.training)  # type: ignore[attr-defined]
        q.input_quant.layer = name
        return q

    @classmethod
    def _float_kwargs(cls, m: Any) -> dict[str, Any]:
        """Constructor arguments that rebuild the float layer ``m`` (a ``FLOAT_TYPE``; layer-specific)."""
        raise NotImplementedError

    def _compute(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The layer's own operation on an (already quantized) input and weight (layer-specific)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._compute(self.input_quant(x), self.weight_quant(self.weight))

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight used in the forward pass."""
        return self.weight_quant(self.weight)

    @property
    def w_bits(self) -> int:
        """Weight bit width (32 = float)."""
        return self.weight_quant.bits

    @w_bits.setter
    def w_bits(self, value: int) -> None:
        self.weight_quant.bits = value

    @property
    def a_bits(self) -> int:
        """Input-activation bit width (32 = float)."""
        return self.input_quant.bits

    @a_bits.setter
    def a_bits(self, value: int) -> None:
        self.input_quant.bits = value

    @property
    def per_channel(self) -> bool:
        """Whether the weight grid has one scale per output channel."""
        return self.weight_quant.per_channel

    @per_channel.setter
    def per_channel(self, value: bool) -> None:
        self.weight_quant.per_channel = value

    def set_bits(self, w_bits: int, a_bits: int) -> None:
        """Change the precision in place (validated)."""
        self.w_bits = w_bits
        self.a_bits = a_bits

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Also accept state dicts written before the quantizers were child modules."""
        for old, new in _LEGACY_KEYS.items():
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]


class QuantConv2d(QuantLayer, nn.Conv2d):
    """``nn.Conv2d`` (plain, depthwise or grouped) with fake-quantized weights and input."""

    FLOAT_TYPE = nn.Conv2d

    @classmethod
    def _float_kwargs(cls, m: nn.Conv2d) -> dict[str, Any]:
        return {
            "in_channels": m.in_channels,
            "out_channels": m.out_channels,
            "kernel_size": m.kernel_size,
            "stride": m.stride,
            "padding": m.padding,
            "dilation": m.dilation,
            "groups": m.groups,
            "bias": m.bias is not None,
            "padding_mode": m.padding_mode,
        }

    def _compute(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, weight, self.bias)


class QuantLinear(QuantLayer, nn.Linear):
    """``nn.Linear`` with fake-quantized weights and input."""

    FLOAT_TYPE = nn.Linear

    @classmethod
    def _float_kwargs(cls, m: nn.Linear) -> dict[str, Any]:
        return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}

    def _compute(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight, self.bias)


QUANTIZABLE_TYPES = (nn.Conv2d, nn.Linear)
