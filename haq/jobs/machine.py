"""This machine's measured table, and whether a measured table describes this machine.

``--device cpu`` means this machine's own table, in the user cache (``$HAQ_CACHE_DIR/tables``,
named by the machine's fingerprint). On first use for a model it is *built* (each new layer
signature timed alone) and *fitted* (a few dozen whole-model configurations of the model timed
end to end, :func:`haq.hardware.fit.fit_table`), because single-layer times alone do not price a
network on onnxruntime: every int8 <-> float boundary inserts Quantize / Dequantize and layout
changes, an int8 region pays requantize work around its adds and pools, and each isolated entry
holds a call overhead the network pays once. On one 2-core machine the layer sum put 10 % of 20
random int8 / fp32 mixes of ResNet-20 within ±10 % of their measured latency and ranked the
digits CNN's backwards (Spearman -0.24); fitted, 95 % and the measurements' own ranking (0.97;
``latency_tables/README.md``). Every model fitted so far is fitted again with each new one (the
device terms are joint): their kept measurements (``<table>.fit.jsonl``) are reused, and which
workloads they were is kept in ``<table>.workloads.json``.

It times 8-bit weights as uint8, as ``haq export`` writes them by default; a cached table that
timed int8 (built before that default) is set aside with its fit's files and measured again.

A measured table from another machine, or one too old to say, gets a one-line warning (an
error with ``--strict``) from :func:`check_machine`. Analytical tables and tables a device agent
timed describe their device by design and are never checked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from haq.core import jsonio
from haq.core.config import from_dict, to_dict
from haq.core.errors import ConfigError, HaqError, TableError
from haq.core.fileio import atomic_write_text
from haq.core.types import Log
from haq.hardware.build import DeviceBackend, extend_table
from haq.hardware.device.machine import MachineFingerprint, fingerprint_differences, machine_fingerprint
from haq.hardware.device.runner import LocalRunner, Runner
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.fit import FIT_CONFIGS, fit_table
from haq.hardware.fit_observations import observations_path, sessions_path
from haq.hardware.measured import MeasuredBackend, cpu_slug
from haq.hardware.networks import Network, network_of
from haq.models import default_cache_dir
from haq.tables.protocols import DeviceTable
from haq.tables.schema import UNSIGNED_WEIGHTS, network_fingerprint
from haq.tables.table import CostTable, load_table
from haq.workload import WorkloadConfig, discover, untrained_model, workload_layers

WORKLOADS_FORMAT = "haq.machine_workloads"
WORKLOADS_VERSION = 1


def check_machine(
    table: DeviceTable, *, strict: bool, log: Log, model: str | None = None, here: MachineFingerprint | None = None
) -> None:
    """Warn in one line (raise :class:`TableError` when ``strict``) if ``table`` was measured on
    another machine or records none; ``here`` is this machine's fingerprint when already taken."""
    meta = table.meta
    if not timed_by_onnxruntime(meta):
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


def timed_by_onnxruntime(meta: Mapping[str, Any]) -> bool:
    """Whether a table's metadata says onnxruntime timed it (a measured table, not an analytical one)."""
    runtime = meta.get("runtime")
    return isinstance(runtime, Mapping) and str(runtime.get("name", "")).startswith("onnxruntime")


def check_fitted(table: CostTable, workload: WorkloadConfig, log: Log) -> None:
    """One line when a table measured on a CPU here prices ``workload``'s network by layer sums
    alone (never fitted) or only by device terms fitted on other networks; nothing for a network
    it was fitted on, for analytical tables, or for a device agent's (the fit times on this
    machine, so it cannot fit those)."""
    machine = table.meta.get("machine")
    if not timed_by_onnxruntime(table.meta) or not isinstance(machine, Mapping) or machine.get("remote"):
        return
    graph = table.data.graph
    if network_fingerprint(workload_layers(workload), table.batch) in graph.measured_whole():
        return
    where = table.path if table.path is not None else table.name
    others = sorted({n for t in (*graph.layer_terms, *(t for f in graph.families for t in f.layer_terms)) for n in t.networks})
    fix = f"`haq tables fit --model {' '.join([workload.model, *(o for o in others if o != workload.model)])} --device {where}`"
    if graph.device_level or graph.families or graph.rules or graph.transitions:
        terms = f"device terms fitted on {', '.join(others)} price it" if others else "only its boundary terms price it"
        log(f"note: table {table.name} was not fitted on {workload.model}; {terms}; {fix} fits it")
    else:
        log(
            f"warning: table {table.name} is not fitted, so it prices {workload.model} by the sum of its layers, without the "
            f"int8 / float boundaries (on one machine 10 % of ResNet-20's policies within ±10 %, 95 % fitted); {fix} fits it"
        )


def machine_table(workload: WorkloadConfig, *, strict: bool = False, log: Log) -> CostTable:
    """This machine's measured table, built and fitted for ``workload``'s network where it is not yet
    (see the module docstring); nothing is timed or said when it already is."""
    here = machine_fingerprint()
    path = machine_table_path(here)
    model, inp = untrained_model(workload)  # at the workload's input shape (haq.workload.resolve_input)
    layers = discover(model, inp)
    table = load_table(path) if path.exists() else None
    if table is not None and table.weight_container != UNSIGNED_WEIGHTS:
        retire_table(path, table, log)
        table = None
    missing = {layer.signature.key() for layer in layers} - (set(table.signatures) if table is not None else set())
    if table is None or missing or workload.model not in table.meta.get("models", []):
        if missing:
            log(
                f"measuring {len(missing)} layer signature(s) of {workload.model} for this machine's table "
                f"(about 1-10 s each; kept in {path} for later runs)"
            )
        report = extend_table(
            machine_backend(here, log),
            [layer.signature for layer in layers],
            path,
            1,
            models=[workload.model],
            log=log,
            inputs={workload.model: inp.shape},
        )
        log(f"{path}: measured {report.added} new signature(s), kept {report.kept}")
        table = load_table(path)
    check_machine(table, strict=strict, log=log, model=workload.model, here=here)
    if network_fingerprint(layers, table.batch) in table.data.graph.measured_whole():
        return table
    return fit_machine_table(table, path, priced(workload), log)


def retire_table(path: Path, table: CostTable, log: Log) -> None:
    """Set aside this machine's table, and the fit's files beside it, when it timed weights other
    than the uint8 ones ``haq export`` writes (one built before that default timed int8): its
    entries, and the whole models its fit kept, price another kernel. The next use measures anew."""
    aside = f".{table.weight_container}-weights"
    for f in (path, workloads_path(path), observations_path(path), sessions_path(path)):
        if f.exists():
            f.replace(f.with_name(f.name + aside))
    log(
        f"this machine's table {path} timed {table.weight_container} weights, and haq export writes uint8: "
        f"measuring it again (the old one is kept as {path.name}{aside})"
    )


def fit_machine_table(table: CostTable, path: Path, workload: WorkloadConfig, log: Log) -> CostTable:
    """``table`` fitted on ``workload`` and every workload fitted before (their measurements are
    reused); on a fit that cannot be made (too few distinct configurations), the table as it was."""
    book = workloads_path(path)
    before = [w for w in read_workloads(book) if w != workload]
    nets: list[Network] = []
    kept: list[WorkloadConfig] = []
    for w in before:
        try:
            nets.append(network_of(w))
            kept.append(w)
        except HaqError as exc:
            log(f"warning: {w.model} is no longer priced from its own measurements on this machine's table ({exc})")
    nets.append(network_of(workload))
    nets = distinct(nets, table.batch)
    log(
        f"fitting this machine's table to {workload.model}: timing {FIT_CONFIGS} whole-model configurations "
        "so it prices int8 / float boundaries and the network as a whole (about a minute for ResNet-20; "
        f"kept in {observations_path(path)})"
    )
    try:
        runner = machine_runner(log, sessions_path(path))
        fitted = fit_table(table, nets, runner, FIT_CONFIGS, path, log=log, observations=observations_path(path))
    except TableError as exc:
        log(f"warning: this machine's table could not be fitted to {workload.model} ({exc}); it is priced by its layers' sum")
        return table
    write_workloads(book, [*kept, workload])
    return fitted


def distinct(nets: Sequence[Network], batch: int) -> list[Network]:
    """``nets`` without repeats of one network (two workloads can describe the same layers), each
    named apart where a model appears at several inputs (the fit tells networks apart by name)."""
    seen: dict[str, Network] = {}
    for net in nets:
        seen.setdefault(network_fingerprint(net.layers, batch), net)
    kept = list(seen.values())
    shared = {n.name for n in kept if sum(m.name == n.name for m in kept) > 1}
    return [replace(n, name=f"{n.name}@{'x'.join(map(str, n.input_shape))}") if n.name in shared else n for n in kept]


def priced(workload: WorkloadConfig) -> WorkloadConfig:
    """What decides a workload's network and input on a table: model, data and input settings only."""
    return WorkloadConfig(
        model=workload.model,
        dataset=workload.dataset,
        data_root=workload.data_root,
        input_size=workload.input_size,
        input_shape=workload.input_shape,
    )


def workloads_path(table_path: Path) -> Path:
    """Where the workloads fitted on this machine's table are listed (not ``*.json``-globbed as a table)."""
    return table_path.with_name(table_path.stem + ".workloads")


def read_workloads(path: Path) -> list[WorkloadConfig]:
    """The workloads :func:`write_workloads` recorded (none when the file is absent)."""
    if not path.exists():
        return []
    doc = jsonio.read_json(path, "workloads file", error=TableError)
    if not isinstance(doc, dict) or doc.get("format") != WORKLOADS_FORMAT or doc.get("version") != WORKLOADS_VERSION:
        raise TableError(
            f"{path} is not a {WORKLOADS_FORMAT} version {WORKLOADS_VERSION} file; delete it (the next fit re-creates it)"
        )
    items = doc.get("workloads")
    if not isinstance(items, list):
        raise TableError(f"{path}: 'workloads' must be a list; delete the file (the next fit re-creates it)")
    try:
        return [from_dict(WorkloadConfig, w, f"{path}: workloads[{i}]") for i, w in enumerate(items)]
    except ConfigError as exc:
        raise TableError(f"{exc}; delete the file (the next fit re-creates it)") from None


def write_workloads(path: Path, workloads: Sequence[WorkloadConfig]) -> None:
    """Record the workloads fitted on this machine's table (atomic)."""
    doc = {"format": WORKLOADS_FORMAT, "version": WORKLOADS_VERSION, "workloads": [to_dict(w) for w in workloads]}
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def machine_table_path(here: MachineFingerprint) -> Path:
    """``$HAQ_CACHE_DIR/tables/cpu-<cpu name>-<fingerprint identity>.json`` (default cache: ``~/.cache/haq``)."""
    return default_cache_dir() / "tables" / f"{cpu_slug(here.cpu)}-{here.identity}.json"


def machine_backend(here: MachineFingerprint, log: Log) -> DeviceBackend:
    """What measures this machine's table: the standard protocol on onnxruntime here."""
    return MeasuredBackend(ProtocolConfig(), log, machine=here)


def machine_runner(log: Log, journal: Path | None = None) -> Runner:
    """What times whole models for this machine's fit: the standard protocol here (the fit refuses
    a runner on a machine other than the table's), journaling its sessions in ``journal``."""
    return LocalRunner(ProtocolConfig(), log, journal)


__all__ = [
    "check_fitted",
    "check_machine",
    "distinct",
    "fit_machine_table",
    "machine_backend",
    "machine_runner",
    "machine_table",
    "machine_table_path",
    "priced",
    "retire_table",
    "read_workloads",
    "write_workloads",
]
