"""Gymnasium environments of haq; importing this package registers ``haq/MixedPrecision-v0``."""

from gymnasium.envs.registration import register, registry

ENV_ID = "haq/MixedPrecision-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="envs.mixed_precision:MixedPrecisionEnv")

__all__ = ["ENV_ID"]
