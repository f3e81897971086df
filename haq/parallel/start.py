"""Starting a worker pool for a loaded workload, with Ray imported only when a pool is asked for
(Ray is an optional dependency: one worker runs in-process without it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from haq.core.errors import ConfigError
from haq.core.types import Log
from haq.evaluation.config import EvalConfig
from haq.parallel.spec import worker_spec
from haq.tables.protocols import DeviceTable
from haq.workload import Workload

if TYPE_CHECKING:
    from haq.parallel.ray_pool import RayPool


def start_pool(
    workload: Workload,
    table: DeviceTable,
    evaluation: EvalConfig,
    kinds: tuple[str, ...],
    torch_device: str,
    workers: int,
    address: str | None = None,
    log: Log | None = None,
) -> RayPool:
    """``workers`` Ray actors serving the evaluators ``kinds`` of ``workload`` (local Ray, or the cluster at ``address``)."""
    if evaluation.hardware_feedback:
        raise ConfigError(
            "--hardware-feedback times every policy on this machine, which parallel workers would disturb; use --workers 1"
        )
    try:
        from haq.parallel.ray_pool import RayPool  # optional dependency: imported only for a pool
    except ImportError as exc:
        raise ConfigError(
            f"--workers {workers} evaluates on Ray, which is not installed; pip install 'haq[parallel]' (or use --workers 1)"
        ) from exc
    return RayPool(worker_spec(workload, table, evaluation, kinds, torch_device), workers, address, log=log)
