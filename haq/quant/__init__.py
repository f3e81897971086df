"""Quantization core: primitives, quantized layers, layer discovery, policies, calibration."""

from haq.quant.calibrate import calibrate_, quant_layers
from haq.quant.discovery import LayerInfo, LayerSignature, discover_layers
from haq.quant.layers import QuantConv2d, QuantLinear
from haq.quant.policy import LayerBits, QuantPolicy, apply_policy_, model_size_bits
from haq.quant.primitives import (
    FLOAT_BITS,
    MAX_BITS,
    MIN_BITS,
    quantize_activation,
    quantize_weight,
    sqnr_db,
)

__all__ = [
    "FLOAT_BITS",
    "MAX_BITS",
    "MIN_BITS",
    "LayerBits",
    "LayerInfo",
    "LayerSignature",
    "QuantConv2d",
    "QuantLinear",
    "QuantPolicy",
    "apply_policy_",
    "calibrate_",
    "discover_layers",
    "model_size_bits",
    "quant_layers",
    "quantize_activation",
    "quantize_weight",
    "sqnr_db",
]
