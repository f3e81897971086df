"""Policy transfer: reuse a trained search agent on a device (or model) it has never seen."""

from __future__ import annotations

from haq.transfer.config import TransferConfig
from haq.transfer.run import Transfer, run_transfer, target_env_config, transfer_env
from haq.transfer.source import SourceRun, load_source

__all__ = ["SourceRun", "Transfer", "TransferConfig", "load_source", "run_transfer", "target_env_config", "transfer_env"]
