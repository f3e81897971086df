"""Quantization core: primitives, quantizer modules, quantized layers, layer discovery, policies,
calibration."""

from haq.quant.calibrate import calibrate_, quant_layers
from haq.quant.discovery import LayerInfo, LayerSignature, discover_layers
from haq.quant.layers import QuantConv2d, QuantLayer, QuantLinear
from haq.quant.policy import LayerBits, QuantPolicy, apply_policy_, model_size_bits
from haq.quant.primitives import (
    FLOAT_BITS,
    MAX_BITS,
    MIN_BITS,
    check_bits,
    quantize_activation,
    quantize_weight,
    sqnr_db,
)
from haq.quant.quantizers import InputQuantizer, WeightQuantizer

__all__ = [
    "FLOAT_BITS",
    "MAX_BITS",
    "MIN_BITS",
    "InputQuantizer",
    "LayerBits",
    "LayerInfo",
    "LayerSignature",
    "QuantConv2d",
    "QuantLayer",
    "QuantLinear",
    "QuantPolicy",
    "WeightQuantizer",
    "apply_policy_",
    "calibrate_",
    "check_bits",
    "discover_layers",
    "model_size_bits",
    "quant_layers",
    "quantize_activation",
    "quantize_weight",
    "sqnr_db",
]
