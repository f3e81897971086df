"""Shared fixtures: one torch thread, a per-session model cache, the trained default workload."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from haq.workload import Workload, WorkloadConfig, load_workload

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained zoo models are cached here (or in $HAQ_CACHE_DIR, shared across runs)."""
    env = os.environ.get("HAQ_CACHE_DIR")
    return Path(env) if env else tmp_path_factory.mktemp("haq-cache")


@pytest.fixture(scope="session")
def cpu() -> torch.device:
    return torch.device("cpu")


@pytest.fixture(scope="session")
def digits_workload(cache_dir: Path, cpu: torch.device) -> Workload:
    """The embedded default: the digits CNN trained on sklearn digits (cached)."""
    return load_workload(WorkloadConfig(), cpu, cache_dir=cache_dir)
