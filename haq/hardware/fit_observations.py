"""The whole-model measurements a fit keeps beside its table (``NAME.fit.jsonl``), and the
journal of its timing sessions (``NAME.fit-sessions.jsonl``): a refit re-measures only what the
file lacks. Measurements are tied to a table build and to the machine that took them, so a file
from another build or machine is ignored, never mixed in."""

from __future__ import annotations

import json
import math
from pathlib import Path

from haq.core import jsonio
from haq.core.errors import TableError
from haq.core.fileio import atomic_write_text
from haq.core.types import BitPair
from haq.hardware.device.machine import MachineFingerprint
from haq.hardware.device.runner import Runner
from haq.tables.table import CostTable

MeasuredCache = dict[tuple[str, tuple[BitPair, ...]], float]
"""Whole-model measurements already taken: (network fingerprint, per-layer bits) -> latency (ms, the protocol's floor)."""
OBSERVATIONS_FORMAT = "haq.fit_observations"
OBSERVATIONS_VERSION = 2
"""2: the header names the timing machine (``machine``: its fingerprint identity)."""


def observations_path(table_path: Path) -> Path:
    """Where ``haq tables fit`` keeps a table's whole-model measurements (not ``*.json``: not a table)."""
    return table_path.with_name(table_path.stem + ".fit.jsonl")


def sessions_path(table_path: Path) -> Path:
    """Where a local fit of ``table_path`` journals its whole-model sessions while it times them
    (:class:`~haq.hardware.device.journal.SessionJournal`): a fit killed halfway resumes from it."""
    return table_path.with_name(table_path.stem + ".fit-sessions.jsonl")


def runner_identity(runner: Runner) -> str:
    """The fingerprint identity of the machine ``runner`` times on (``unknown`` for an agent too old to say)."""
    reported = runner.device_info().get("fingerprint")
    return str(reported.get("identity", "unknown")) if isinstance(reported, dict) else "unknown"


def check_table_machine(table: CostTable, machine: str) -> None:
    """Whole-model times from one machine must not correct layer costs measured on another."""
    recorded = table.meta.get("machine")
    if recorded is None:
        return
    if MachineFingerprint.from_dict(recorded).identity != machine:
        raise TableError(
            f"table {table.name} was measured on machine {recorded.get('identity')} ({recorded.get('cpu', '?')}), "
            f"but the fit would time on machine {machine}; fit it where it was built, or build this "
            "machine's table with `haq tables build --device cpu`"
        )


def save_observations(path: Path, table: CostTable, known: MeasuredCache, machine: str) -> None:
    """One header line naming the table's build and the timing machine, then one measurement per line (atomic write)."""
    head = {
        "format": OBSERVATIONS_FORMAT,
        "version": OBSERVATIONS_VERSION,
        "device": table.device,
        "table_created": table.meta["created"],
        "protocol": table.meta["protocol"],
        "machine": machine,
    }
    lines = [json.dumps(head, sort_keys=True)]
    lines += [
        json.dumps({"fingerprint": fp, "bits": [list(b) for b in bits], "measured_ms": ms})
        for (fp, bits), ms in sorted(known.items())
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")


def load_observations(path: Path, table: CostTable, machine: str) -> MeasuredCache:
    """Measurements recorded in ``path`` for ``table`` on ``machine`` (a fingerprint identity);
    empty (with nothing reused) if they are for another build or were taken on another machine,
    including version 1 files, which did not say where they were taken."""
    try:
        text = jsonio.read_text(path, "fit observations file", max_bytes=jsonio.MAX_LOG_BYTES, error=TableError)
        rows = [jsonio.loads(line, str(path), error=TableError) for line in text.splitlines() if line.strip()]
        head, body = rows[0], rows[1:]
        if head.get("format") != OBSERVATIONS_FORMAT or head.get("version") not in (1, OBSERVATIONS_VERSION):
            raise ValueError(
                f"format {head.get('format')!r} version {head.get('version')!r}, "
                f"expected {OBSERVATIONS_FORMAT!r} version {OBSERVATIONS_VERSION}"
            )
        if (head.get("device"), head.get("table_created"), head.get("protocol"), head.get("machine")) != (
            table.device,
            table.meta["created"],
            table.meta["protocol"],
            machine,
        ):
            return {}
        out: MeasuredCache = {}
        for r in body:
            ms = float(r["measured_ms"])
            if not (math.isfinite(ms) and ms > 0):
                raise ValueError(f"measured_ms must be finite and > 0, got {r['measured_ms']!r}")
            out[(str(r["fingerprint"]), tuple((int(w), int(a)) for w, a in r["bits"]))] = ms
        return out
    except (OSError, IndexError, KeyError, TypeError, ValueError, AttributeError, TableError) as exc:
        raise TableError(f"fit observations file {path} is unreadable or malformed ({exc}); delete it to re-measure") from None
