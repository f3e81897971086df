"""Turning names into concrete things: the one place that resolves a table name into a cost
table and builds the measuring cost source (hardware feedback, ``haq evaluate``'s timing on this
machine), then the search problem. The layers below receive these; they never build them.

Measured tables describe one machine. A table name is resolved here and checked against this
machine's fingerprint (:mod:`haq.hardware.device.machine`): a measured table from another
machine, or one too old to say, gets a one-line warning (an error with ``--strict``), and the
name ``cpu`` means this machine's own table, built on first use in the user cache
(``$HAQ_CACHE_DIR/tables``) and extended with each new model's layers. Analytical tables and
tables a device agent timed describe their device by design and are never checked.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import latency_tables
from haq.commands.common import log as stderr_log
from haq.core.errors import ConfigError, TableError
from haq.core.types import Log
from haq.core.validate import count
from haq.hardware.build import DeviceBackend, extend_table
from haq.hardware.device.machine import MachineFingerprint, fingerprint_differences, machine_fingerprint
from haq.hardware.device.runner import LocalRunner
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.feedback import MeasuredCost, QDQExporter
from haq.hardware.measured import MeasuredBackend, cpu_slug
from haq.models import default_cache_dir
from haq.parallel import start_pool
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem, build_problem, evaluator_kinds
from haq.tables.protocols import DeviceTable
from haq.tables.table import CostTable, load_table
from haq.training import parse_torch_device
from haq.workload import Workload, WorkloadConfig, load_workload, workload_layers


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
) -> SearchProblem:
    """The search problem for ``cfg``: its table resolved by name (:func:`load_device_table`) unless one is given.

    With ``cfg.evaluation.hardware_feedback`` every policy's latency is measured on this machine
    (the whole model exported to QDQ ONNX, bit widths the CPU cannot run emulated on 8-bit
    containers so the time is what really runs); measurements are kept in ``feedback_cache``
    so a resumed run does not re-measure. ``workers`` > 1 (or a ``ray_address``) evaluates on that
    many Ray workers (:func:`haq.parallel.start_pool`); ``problem.close()`` stops them.
    """
    tab = table if table is not None else load_device_table(cfg.table, cfg.workload, strict=strict, log=log)
    count("workers", workers)
    if workers > 1 or ray_address is not None:
        workload = load_workload(cfg.workload, parse_torch_device(cfg.torch_device), cache_dir=cache_dir, log=log)
        pool = start_pool(workload, tab, cfg.evaluation, evaluator_kinds(cfg), cfg.torch_device, workers, ray_address, log)
        try:
            problem = build_problem(cfg, table=tab, workload=workload, evaluator_factory=pool.evaluator)
        except BaseException:
            pool.close()
            raise
        problem.workers, problem.pool, problem.held_out_factory = workers, pool, pool.held_out
        return problem
    if not cfg.evaluation.hardware_feedback:
        return build_problem(cfg, table=tab, cache_dir=cache_dir, log=log)
    check_prices_this_machine(tab)
    workload = load_workload(cfg.workload, parse_torch_device(cfg.torch_device), cache_dir=cache_dir, log=log)
    latency = local_measurer(workload, emulated=True, cache_path=feedback_cache, log=log)
    return build_problem(cfg, table=tab, latency_source=latency, workload=workload)


def add_strict_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:  # noqa: SLF001 - argparse's group type
    """``--strict``, for every command that loads tables to search, evaluate or cost with."""
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse a measured table timed on another machine (or one that cannot say which) instead of warning",
    )


def add_parallel_args(p: argparse.ArgumentParser) -> None:
    """``--workers`` and ``--ray-address``, for the commands that evaluate many policies."""
    g = p.add_argument_group("parallel evaluation")
    g.add_argument(
        "--workers",
        type=int,
        default=1,
        help="evaluate this many policies at once on Ray workers that each load the model once (1: in-process)",
    )
    g.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="join this Ray cluster instead of starting a local one (`ray start --head` prints the address)",
    )


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
    return table


def load_device_tables(
    names: Sequence[str] | None, workload: WorkloadConfig | None, *, strict: bool = False, log: Log | None = None
) -> list[CostTable]:
    """Several tables by name (every shipped one when ``names`` is empty), each as :func:`load_device_table`."""
    return [load_device_table(n, workload, strict=strict, log=log) for n in (names or latency_tables.available())]


def check_machine(
    table: DeviceTable, *, strict: bool, log: Log, model: str | None = None, here: MachineFingerprint | None = None
) -> None:
    """Warn in one line (raise :class:`TableError` when ``strict``) if ``table`` was measured on
    another machine or records none; ``here`` is this machine's fingerprint when already taken."""
    meta = table.meta
    runtime = meta.get("runtime")
    if not (isinstance(runtime, Mapping) and str(runtime.get("name", "")).startswith("onnxruntime")):
        return  # analytical: describes its accelerator, wherever haq runs
    record = meta.get("machine")
    if isinstance(record, Mapping):
        if record.get("remote"):
            return  # timed by a device agent: it describes that device by design
        differences = fingerprint_differences(MachineFingerprint.from_dict(record), here or machine_fingerprint())
        if not differences:
            return
        problem = f"was measured on another machine ({'; '.join(differences)}), so its costs may not hold here"
    else:
        if "device agent" in str((meta.get("device") or {}).get("description", "")):
            return
        problem = "records no machine fingerprint (built by an older haq), so it cannot be verified to describe this machine"
    fix = (
        f"build this machine's table with `haq tables build --device cpu --model {model or 'MODEL'} --out my-cpu.json`"
        " or pass --device cpu"
    )
    if strict:
        raise TableError(f"table {table.name} {problem}; refused under --strict: {fix}")
    log(f"warning: table {table.name} {problem}; {fix} (--strict refuses such tables)")


def machine_table(workload: WorkloadConfig, *, strict: bool = False, log: Log | None = None) -> CostTable:
    """This machine's measured table, extended with ``workload``'s layers it lacks (built on first use).

    It lives in :func:`machine_table_path`, named by this machine's fingerprint, so a second
    machine sharing the cache directory gets its own file.
    """
    say = log or stderr_log
    here = machine_fingerprint()
    path = machine_table_path(here)
    layers = workload_layers(workload)  # at the workload's input shape (haq.workload.resolve_input)
    table = load_table(path) if path.exists() else None
    missing = {layer.signature.key() for layer in layers} - (set(table.signatures) if table is not None else set())
    if table is None or missing or workload.model not in table.meta.get("models", []):
        if missing:
            say(
                f"measuring {len(missing)} layer signature(s) of {workload.model} for this machine's table "
                f"(about 10-30 s each; kept in {path} for later runs)"
            )
        report = extend_table(
            machine_backend(here, say), [layer.signature for layer in layers], path, 1, models=[workload.model], log=say
        )
        say(f"{path}: measured {report.added} new signature(s), kept {report.kept}")
        table = load_table(path)
    check_machine(table, strict=strict, log=say, model=workload.model, here=here)
    return table


def machine_table_path(here: MachineFingerprint) -> Path:
    """``$HAQ_CACHE_DIR/tables/cpu-<cpu name>-<fingerprint identity>.json`` (default cache: ``~/.cache/haq``)."""
    return default_cache_dir() / "tables" / f"{cpu_slug(here.cpu)}-{here.identity}.json"


def machine_backend(here: MachineFingerprint, log: Log) -> DeviceBackend:
    """What measures this machine's table: the standard protocol on onnxruntime here."""
    return MeasuredBackend(ProtocolConfig(), log, machine=here)


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


__all__ = [
    "add_parallel_args",
    "add_strict_arg",
    "check_machine",
    "check_prices_this_machine",
    "load_device_table",
    "load_device_tables",
    "local_measurer",
    "machine_table",
    "machine_table_path",
    "make_problem",
]
