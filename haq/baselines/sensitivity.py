"""Per-layer quantization sensitivity now lives in :mod:`haq.problem.sensitivity` (the environment's
state features use it too); the baselines import it from there."""

from haq.problem.sensitivity import BITS, LayerSensitivity, Sensitivity, SensitivityConfig, estimate_sensitivity

__all__ = ["BITS", "LayerSensitivity", "Sensitivity", "SensitivityConfig", "estimate_sensitivity"]
