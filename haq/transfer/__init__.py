"""Policy transfer: reuse a trained search agent on a device (or model) it has never seen."""

from __future__ import annotations

from haq.transfer.config import TransferConfig
from haq.transfer.run import TransferResult, run_transfer, target_env_config
from haq.transfer.source import SourceRun, load_source

__all__ = ["SourceRun", "TransferConfig", "TransferResult", "load_source", "run_transfer", "target_env_config"]
