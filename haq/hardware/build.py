"""Build or extend a device cost table for a model's layers, whatever prices them.

A *backend* prices one layer signature on one device (an analytical model, onnxruntime on this
CPU, a remote device agent). :func:`extend_table` asks it only for signatures the table does
not hold yet, so a table grows as users add models, and saves atomically as it goes. Which
backend a ``--device`` string names is decided by the command (``haq tables build``) or the
job that runs it; both hand :func:`build_table` a :class:`BuildConfig` (the models and the table).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from haq import __version__
from haq.core import validate
from haq.core.errors import ConfigError, TableError
from haq.core.types import Log
from haq.hardware.build_analytical import ANALYTICAL_DEVICES
from haq.hardware.device.machine import MachineFingerprint, fingerprint_differences
from haq.quant.discovery import LayerSignature
from haq.tables.schema import (
    SIGNED_WEIGHTS,
    UNSIGNED_WEIGHTS,
    WEIGHT_CONTAINERS,
    Entry,
    GraphExtras,
    TableData,
    leaves_positive,
)
from haq.tables.table import CostTable, load_table, save_table
from haq.tables.validation import parse
from haq.workload import WorkloadConfig, resolve_input, workload_layers

LOCAL_DEVICES = (*ANALYTICAL_DEVICES, "cpu")
"""Devices priced on this machine, which need no agent: the analytical models and this CPU."""

# Metadata that must agree before new entries may join an existing table.
_COMPATIBLE_FIELDS = ("device", "runtime", "threads", "units", "metrics", "constants")
_SAVE_EVERY_S = 5.0
BATCH_SIGNATURES = 12
"""Signatures a :class:`BatchedBackend` times in one interleaved batch (the table is saved between batches)."""


class DeviceBackend(Protocol):
    """Prices layer signatures on one device."""

    def metadata(self, batch: int) -> dict[str, Any]:
        """Table metadata except ``created`` / ``updated`` / ``batch`` / ``models`` / ``tool``."""

    def entries(self, sig: LayerSignature) -> list[Entry]:
        """Entries for every (w, a) the device runs for ``sig`` (``sig.batch`` is the table's)."""


@runtime_checkable
class BatchedBackend(Protocol):
    """A backend that prices several signatures in one go (timed together, interleaved)."""

    def entries_many(self, sigs: Sequence[LayerSignature]) -> list[list[Entry]]:
        """:meth:`DeviceBackend.entries` of each of ``sigs``, in order."""


@dataclass(frozen=True)
class BuildReport:
    """What a build did: signatures priced now, signatures already in the table, entries in all."""

    path: Path
    added: int
    kept: int
    entries: int


def extend_table(
    backend: DeviceBackend,
    signatures: Sequence[LayerSignature],
    out: Path,
    batch: int,
    models: Sequence[str] = (),
    log: Log | None = None,
    inputs: Mapping[str, Sequence[int]] | None = None,
) -> BuildReport:
    """Add the missing ``signatures`` (at ``batch``) to the table at ``out``, creating it if absent.

    ``inputs`` (model -> the (C, H, W) it was priced at) is recorded in ``meta.inputs``.

    Signatures already present are kept as they are. A :class:`BatchedBackend` prices up to
    :data:`BATCH_SIGNATURES` of them at a time. The file is rewritten atomically after every
    few seconds of pricing and at the end (not at all when nothing changed), so an interrupted
    build keeps its work.
    """
    validate.count("batch", batch)
    now = _now()
    fresh = {**backend.metadata(batch), "batch": batch, "created": now, "tool": {"name": "haq", "version": __version__}}
    existing = load_table(out) if out.exists() else None
    if existing is not None:
        _check_compatible(existing, fresh, out)
        _check_same_machine(existing, fresh, out, log)
        meta = {**dict(existing.meta), "updated": now}
        sigs = dict(existing.signatures)
        entries = list(existing.entries())
        graph = existing.data.graph
    else:
        meta, sigs, entries, graph = fresh, {}, [], GraphExtras()
    known_models = list(meta.get("models", []))
    meta["models"] = sorted({*known_models, *models})
    known_inputs = {m: [list(s) for s in shapes] for m, shapes in meta.get("inputs", {}).items()}
    merged = {m: list(shapes) for m, shapes in known_inputs.items()}
    for model, shape in (inputs or {}).items():
        if list(shape) not in merged.setdefault(model, []):
            merged[model].append(list(shape))
    if merged:
        meta["inputs"] = merged
    todo = _unique([s.with_batch(batch) for s in signatures if s.with_batch(batch).key() not in sigs])
    kept = len({s.with_batch(batch).key() for s in signatures}) - len(todo)
    last_save = time.monotonic()
    step = BATCH_SIGNATURES if isinstance(backend, BatchedBackend) else 1
    for start in range(0, len(todo), step):
        chunk = todo[start : start + step]
        if log:
            names = chunk[0].key() if len(chunk) == 1 else f"{len(chunk)} signatures, timed together"
            log(f"[{start + len(chunk)}/{len(todo)}] {backend_name(meta)}: {names}")
        priced = backend.entries_many(chunk) if isinstance(backend, BatchedBackend) else [backend.entries(chunk[0])]
        for sig, new in zip(chunk, priced):
            if not new:
                raise TableError(f"device {backend_name(meta)} runs no bit width for layer {sig.key()}")
            sigs[sig.key()] = sig
            entries.extend(new)
            graph = _fitted_terms_holding(graph, new, out, log)
        if time.monotonic() - last_save > _SAVE_EVERY_S:
            _save(meta, sigs, entries, graph, out)
            last_save = time.monotonic()
    if todo or existing is None or meta["models"] != known_models or merged != known_inputs:
        _save(meta, sigs, entries, graph, out)
    return BuildReport(path=out, added=len(todo), kept=kept, entries=len(entries))


def _fitted_terms_holding(graph: GraphExtras, new: Sequence[Entry], out: Path, log: Log | None) -> GraphExtras:
    """``graph``, or only its measured transitions where a new entry costs less than a fitted call
    overhead: the fitted terms assumed every entry holds one, so they no longer describe the
    table (and would make it unloadable); ``haq tables fit`` fits them again."""
    if all(leaves_positive(o, e) for o in graph.run_overheads() for e in new):
        return graph
    if log:
        log(
            f"{out}: a new entry costs less than the table's fitted call overhead, so its fitted graph terms are "
            "dropped; fit them again with `haq tables fit --model ... --device` this table"
        )
    return GraphExtras(transitions=graph.transitions)


def backend_name(meta: dict[str, Any]) -> str:
    """The device name a metadata block records."""
    return str(meta["device"]["name"])


def _save(meta: dict[str, Any], sigs: dict[str, LayerSignature], entries: list[Entry], graph: GraphExtras, out: Path) -> None:
    raw = TableData(meta=meta, signatures=sigs, entries=tuple(entries), graph=graph).to_dict()
    save_table(parse(raw, str(out)), out)  # validate exactly what a later load will see


def _check_compatible(existing: CostTable, fresh: dict[str, Any], out: Path) -> None:
    if existing.batch != fresh["batch"]:
        raise TableError(
            f"{out} holds batch {existing.batch}, not {fresh['batch']}; pass --batch {existing.batch} or another --out"
        )
    weights = fresh["protocol"].get("weights")
    if weights is not None and existing.weight_container != weights:
        flag = "--int8-weights" if existing.weight_container == SIGNED_WEIGHTS else "no --int8-weights"
        raise TableError(
            f"{out} was timed with {existing.weight_container} weights, this build times {weights}; "
            f"extend it with {flag}, or choose another --out"
        )
    for f in _COMPATIBLE_FIELDS:
        if existing.meta.get(f) != fresh.get(f):
            raise TableError(
                f"{out}: meta.{f} differs from what device {backend_name(fresh)} produces now; "
                "extend it with the same device and settings, or choose another --out"
            )


def _check_same_machine(existing: CostTable, fresh: dict[str, Any], out: Path, log: Log | None) -> None:
    """New entries join a measured table only when they are timed on the machine it records.

    The table's own fingerprint (with its build-time probe) is kept; a table written before
    fingerprints existed stays without one, since its old entries may come from anywhere.
    """
    old, new = existing.meta.get("machine"), fresh.get("machine")
    if old is None and new is None:
        return
    if old is None:
        if log:
            log(
                f"{out} records no machine fingerprint (written by an older haq); new entries are added, "
                "but the table still cannot be verified against a machine"
            )
        return
    if new is None:
        raise TableError(
            f"{out} was measured on a fingerprinted machine but device {backend_name(fresh)} reports none; "
            "extend it with the device that built it, or choose another --out"
        )
    recorded, here = MachineFingerprint.from_dict(old), MachineFingerprint.from_dict(new)
    differences = fingerprint_differences(recorded, here)
    if recorded.identity != here.identity or bool(old.get("remote")) != bool(new.get("remote")):
        raise TableError(
            f"{out} was measured on another machine ({'; '.join(differences) or 'remote vs local timing'}); "
            "extend it on that machine, or choose another --out"
        )
    if differences and log:
        log(
            f"{out}: this machine is slower or faster now than when the table was built ({'; '.join(differences)}); "
            "entries measured now may not match the old ones"
        )


def _unique(sigs: Sequence[LayerSignature]) -> list[LayerSignature]:
    seen: dict[str, LayerSignature] = {}
    for s in sigs:
        seen.setdefault(s.key(), s)
    return list(seen.values())


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class BuildConfig:
    """What ``haq tables build`` was asked to do, validated."""

    models: tuple[str, ...]
    device: str
    out: Path
    batch: int = 1
    dataset: str | None = None
    data_root: str | None = None
    input_size: int | None = None
    input_shape: tuple[int, int, int] | None = None
    weights: str = UNSIGNED_WEIGHTS

    def __post_init__(self) -> None:
        validate.choice("build.weights", self.weights, WEIGHT_CONTAINERS)
        if self.weights != UNSIGNED_WEIGHTS and self.device in ANALYTICAL_DEVICES:
            raise ConfigError(
                f"--int8-weights is for tables measured with onnxruntime (--device cpu or remote://HOST:PORT); "
                f"{self.device} is an analytical model, whose prices no weight container changes"
            )
        if not self.models or any(not m for m in self.models):
            raise ConfigError("--model needs at least one zoo name or package.module:callable")
        if not self.device:
            raise ConfigError(f"--device is empty; choose {', '.join(LOCAL_DEVICES)} or remote://HOST:PORT")
        validate.count("--batch", self.batch)
        if self.out.suffix != ".json":
            raise ConfigError(f"--out must be a .json file, got {self.out}")
        if self.out.exists() and not self.out.is_file():
            raise ConfigError(f"--out {self.out} exists and is not a file")


def build_table(cfg: BuildConfig, backend: Callable[[], DeviceBackend], log: Log) -> BuildReport:
    """Price the layers of ``cfg``'s models with ``backend()`` into ``cfg.out`` (``haq tables build``
    and the service's table-build jobs)."""
    signatures = []
    inputs: dict[str, tuple[int, int, int]] = {}
    for model in cfg.models:
        wcfg = WorkloadConfig(
            model=model, dataset=cfg.dataset, data_root=cfg.data_root, input_size=cfg.input_size, input_shape=cfg.input_shape
        )
        layers, inputs[model] = workload_layers(wcfg), resolve_input(wcfg).shape
        log(
            f"{model} at {'x'.join(map(str, inputs[model]))}: {len(layers)} layers, "
            f"{len({layer.signature.key() for layer in layers})} distinct signatures"
        )
        signatures.extend(layer.signature for layer in layers)
    return extend_table(backend(), signatures, cfg.out, cfg.batch, models=cfg.models, log=log, inputs=inputs)
