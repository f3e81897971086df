"""Turning names into concrete things: the one place that resolves a table name into a cost
table and builds the measuring cost source (hardware feedback, ``haq evaluate``'s timing on this
machine), then the search problem. The layers below receive these; they never build them.

Measured tables describe one machine. A table name is resolved here and checked against this
machine (:func:`haq.jobs.machine.check_machine`); the name ``cpu`` means this machine's own
table, built and fitted for each model on first use (:func:`haq.jobs.machine.machine_table`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import latency_tables
from haq.core.errors import ConfigError
from haq.core.types import Log, stderr_log
from haq.core.validate import count
from haq.evaluation.config import EvalConfig
from haq.hardware.device.runner import LocalRunner
from haq.hardware.feedback import MeasuredCost, QDQExporter
from haq.jobs.machine import check_fitted, check_machine, machine_table
from haq.models import default_cache_dir
from haq.parallel import start_pool
from haq.problem.config import EnvConfig
from haq.problem.finetune_lr import needs_choice, resolve_finetune_lr
from haq.problem.problem import SearchProblem, build_problem, evaluator_kinds
from haq.runs.finetune_lr_file import LrCache
from haq.runs.sensitivity_file import SensitivityCache
from haq.tables.protocols import DeviceTable
from haq.tables.table import CostTable
from haq.training import parse_torch_device
from haq.workload import Workload, WorkloadConfig, load_workload

SENSITIVITY_CACHE = "sensitivity"
"""The cache's folder of sensitivity estimates (:class:`~haq.runs.sensitivity_file.SensitivityCache`)."""
FINETUNE_LR_CACHE = "finetune_lr"
"""The cache's folder of chosen DQ fine-tune rates (:class:`~haq.runs.finetune_lr_file.LrCache`)."""


def make_problem(
    cfg: EnvConfig,
    *,
    cache_dir: Path | None = None,
    log: Log | None = None,
    feedback_cache: Path | None = None,
    table: DeviceTable | None = None,
    strict: bool = False,
    workers: int = 1,
    ray_address: str | None = None,
    sensitivity_cache: bool = True,
    finetune_lr: float | None = None,
) -> SearchProblem:
    """The search problem for ``cfg``: its table resolved by name (:func:`load_device_table`) unless one is given.

    With ``cfg.evaluation.hardware_feedback`` every policy's latency is measured on this machine
    (the whole model exported to QDQ ONNX, bit widths the CPU cannot run emulated on 8-bit
    containers so the time is what really runs); measurements are kept in ``feedback_cache``
    so a resumed run does not re-measure. ``workers`` > 1 (or a ``ray_address``) evaluates on that
    many Ray workers (:func:`haq.parallel.start_pool`); ``problem.close()`` stops them. Sensitivity
    estimates are kept in ``<cache_dir>/sensitivity`` and reused by any later run on the same
    model, images and reward, and so is the DQ fine-tune's rate when ``cfg.evaluation.finetune_lrs``
    asks for one to be chosen (:mod:`haq.problem.finetune_lr`; ``sensitivity_cache=False``: both
    measured afresh, as a benchmark that times a whole first run needs); ``finetune_lr``, the rate
    a resumed run recorded (:func:`~haq.runs.finetune_lr_file.recorded_finetune_lr`), is kept
    instead of choosing again. With a pool the choice's fine-tunes run on its workers.
    """
    tab = table if table is not None else load_device_table(cfg.table, cfg.workload, strict=strict, log=log)
    count("workers", workers)
    cache = cache_dir or default_cache_dir()
    store = SensitivityCache(cache / SENSITIVITY_CACHE, log) if sensitivity_cache else None
    rates = LrCache(cache / FINETUNE_LR_CACHE, log) if sensitivity_cache else None
    workload: Workload | None = None
    if workers > 1 or ray_address is not None:
        workload = load_workload(cfg.workload, parse_torch_device(cfg.torch_device), cache_dir=cache_dir, log=log)
        pool = start_pool(workload, tab, cfg.evaluation, evaluator_kinds(cfg), cfg.torch_device, workers, ray_address, log)
        try:
            if needs_choice(cfg):  # the rate's fine-tunes on the workers, then every evaluator at it
                cfg = resolve_finetune_lr(cfg, workload, tab, rates, log, pool, finetune_lr)
                pool.reconfigure(cfg.evaluation)
            problem = build_problem(
                cfg,
                table=tab,
                workload=workload,
                evaluator_factory=pool.evaluator,
                log=log,
                strict=strict,
                pool=pool,
                sensitivity_store=store,
            )
        except BaseException:
            pool.close()
            raise
        problem.workers, problem.held_out_factory = workers, pool.held_out
        return problem
    if needs_choice(cfg):  # before any evaluator is built
        workload = load_workload(cfg.workload, parse_torch_device(cfg.torch_device), cache_dir=cache_dir, log=log)
        cfg = resolve_finetune_lr(cfg, workload, tab, rates, log, recorded=finetune_lr)
    if not cfg.evaluation.hardware_feedback:
        return build_problem(
            cfg, table=tab, workload=workload, cache_dir=cache_dir, log=log, strict=strict, sensitivity_store=store
        )
    check_prices_this_machine(tab)
    workload = workload or load_workload(cfg.workload, parse_torch_device(cfg.torch_device), cache_dir=cache_dir, log=log)
    latency = local_measurer(workload, tab, emulated=True, cache_path=feedback_cache, log=log)
    return build_problem(
        cfg, table=tab, latency_source=latency, workload=workload, log=log, strict=strict, sensitivity_store=store
    )


def chosen_finetune_lr(workload: Workload, table: DeviceTable, table_name: str, log: Log | None = None) -> float:
    """The DQ fine-tune rate a default full-evaluator search on ``workload`` uses: chosen among
    ``EvalConfig``'s candidates (:mod:`haq.problem.finetune_lr`) and kept in the cache, so ``haq
    evaluate`` fine-tunes a policy as the search that found it did."""
    env = EnvConfig(workload=workload.config, table=table_name, evaluation=EvalConfig(kind="full"))
    store = LrCache(default_cache_dir() / FINETUNE_LR_CACHE, log)
    return resolve_finetune_lr(env, workload, table, store, log).evaluation.finetune_lr


def load_device_table(
    name: str, workload: WorkloadConfig | None = None, *, strict: bool = False, log: Log | None = None
) -> CostTable:
    """The table ``name`` (shipped name or file; ``cpu``: this machine's, which needs ``workload``),
    checked against this machine (:func:`check_machine`)."""
    say = log or stderr_log
    if name == latency_tables.MACHINE_TABLE:
        if workload is None:
            raise ConfigError("--device cpu builds this machine's table for a model; pass --model")
        return machine_table(workload, strict=strict, log=say)
    table = latency_tables.load(name)
    check_machine(table, strict=strict, log=say, model=workload.model if workload is not None else None)
    if workload is not None:
        check_fitted(table, workload, say)
    return table


def load_device_tables(
    names: Sequence[str] | None, workload: WorkloadConfig | None, *, strict: bool = False, log: Log | None = None
) -> list[CostTable]:
    """Several tables by name (every shipped one when ``names`` is empty), each as :func:`load_device_table`."""
    return [load_device_table(n, workload, strict=strict, log=log) for n in (names or latency_tables.available())]


def check_prices_this_machine(table: DeviceTable) -> None:
    """Refuse hardware feedback on a table of another device: budget and measurement would differ in units."""
    runtime = table.meta.get("runtime", {})
    if not (isinstance(runtime, Mapping) and runtime.get("name") == "onnxruntime"):
        raise ConfigError(
            f"--hardware-feedback measures this machine with onnxruntime, but table '{table.name}' prices another "
            "device, so budget and measured latency would be in different units; use this machine's measured table"
        )


def local_measurer(
    workload: Workload, table: DeviceTable, *, emulated: bool, cache_path: Path | None = None, log: Log | None = None
) -> MeasuredCost:
    """Whole-model latency of ``workload`` under a policy, timed here with the standard protocol,
    8-bit weights exported in the container ``table`` timed (the costs the measurements stand in for).

    emulated: export bit widths the CPU cannot run on 8-bit containers instead of refusing.
    """
    exporter = QDQExporter(emulated=emulated, weights=table.export_weights)
    return MeasuredCost(workload, LocalRunner(), exporter, cache_path, log)


__all__ = [
    "check_prices_this_machine",
    "load_device_table",
    "load_device_tables",
    "local_measurer",
    "make_problem",
]
