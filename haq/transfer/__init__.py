"""Policy transfer: reuse a trained search agent on a device (or model) it has never seen, and
see what a policy tuned for one device costs on every other.

``run_transfer`` (which loads the stable-baselines3 stack) is imported on first use, so
``haq cost`` stays light.
"""

from __future__ import annotations

from typing import Any

from haq.transfer.config import TransferConfig
from haq.transfer.device_costs import DeviceCost, cost_on_device, cost_on_devices, promote_pair, shipped_tables

_LAZY = {
    "run_transfer": "haq.transfer.run",
    "TransferResult": "haq.transfer.run",
    "target_env_config": "haq.transfer.run",
    "load_source": "haq.transfer.source",
    "SourceRun": "haq.transfer.source",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'haq.transfer' has no attribute '{name}'")


__all__ = [
    "DeviceCost",
    "SourceRun",
    "TransferConfig",
    "TransferResult",
    "cost_on_device",
    "cost_on_devices",
    "load_source",
    "promote_pair",
    "run_transfer",
    "shipped_tables",
    "target_env_config",
]
