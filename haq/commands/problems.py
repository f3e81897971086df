"""Turning names into concrete things: the one place that resolves a table name into a cost
table and builds the measuring cost source (hardware feedback, ``haq evaluate``'s timing on this
machine), then the search problem. The layers below receive these; they never build them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import latency_tables
from haq.core.errors import ConfigError
from haq.core.types import Log
from haq.hardware.device.runner import LocalRunner
from haq.hardware.feedback import MeasuredCost, QDQExporter
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem, build_problem
from haq.tables.protocols import DeviceTable
from haq.training import parse_torch_device
from haq.workload import Workload, load_workload


def make_problem(
    cfg: EnvConfig,
    *,
    cache_dir: Path | None = None,
    log: Log | None = None,
    feedback_cache: Path | None = None,
    table: DeviceTable | None = None,
) -> SearchProblem:
    """The search problem for ``cfg``: its table resolved by name unless one is given.

    With ``cfg.evaluation.hardware_feedback`` every policy's latency is measured on this machine
    (the whole model exported to QDQ ONNX, bit widths the CPU cannot run emulated on 8-bit
    containers so the time is what really runs); measurements are kept in ``feedback_cache``
    so a resumed run does not re-measure.
    """
    tab = table if table is not None else latency_tables.load(cfg.table)
    if not cfg.evaluation.hardware_feedback:
        return build_problem(cfg, table=tab, cache_dir=cache_dir, log=log)
    check_prices_this_machine(tab)
    workload = load_workload(cfg.workload, parse_torch_device(cfg.torch_device), cache_dir=cache_dir, log=log)
    latency = local_measurer(workload, emulated=True, cache_path=feedback_cache, log=log)
    return build_problem(cfg, table=tab, latency_source=latency, workload=workload)


def check_prices_this_machine(table: DeviceTable) -> None:
    """Refuse hardware feedback on a table of another device: budget and measurement would differ in units."""
    runtime = table.meta.get("runtime", {})
    if not (isinstance(runtime, Mapping) and runtime.get("name") == "onnxruntime"):
        raise ConfigError(
            f"--hardware-feedback measures this machine with onnxruntime, but table '{table.name}' prices another "
            "device, so budget and measured latency would be in different units; use this machine's measured table"
        )


def local_measurer(workload: Workload, *, emulated: bool, cache_path: Path | None = None, log: Log | None = None) -> MeasuredCost:
    """Whole-model latency of ``workload`` under a policy, timed here with the standard protocol.

    emulated: export bit widths the CPU cannot run on 8-bit containers instead of refusing.
    """
    return MeasuredCost(workload, LocalRunner(), QDQExporter(emulated=emulated), cache_path, log)


__all__ = ["check_prices_this_machine", "local_measurer", "make_problem"]
