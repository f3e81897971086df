"""Fit a measured table's graph-aware terms on whole models timed end to end.

:func:`fit_table` measures uniform and random policies of each network, fits boundary rules
and per-network corrections on them (the numerics are :mod:`haq.hardware.graph_fit`) and
saves the table with them. The whole-model measurements it used are kept in a small JSON-lines
file beside the table, so a refit (a new fitting method, another model added) re-measures
only what that file lacks. Both are tied to a machine: a table that records one
(``meta.machine``) is fitted only by a runner on the same machine, and kept measurements are
reused only on the machine that took them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from haq.core import jsonio, validate
from haq.core.errors import TableError
from haq.core.fileio import atomic_write_text
from haq.core.types import BitPair, Log
from haq.hardware.device.machine import MachineFingerprint
from haq.hardware.device.runner import Runner
from haq.hardware.graph_fit import BoundaryFit, Observation, fit_boundaries, fit_correction
from haq.hardware.networks import Network, bits_of, export_all, policy_of, sample_policies, supported_pairs
from haq.quant import LayerInfo, QuantPolicy
from haq.tables.schema import Correction, GraphExtras, TransitionRule, network_fingerprint
from haq.tables.table import CostTable, save_table

MeasuredCache = dict[tuple[str, tuple[BitPair, ...]], float]
"""Whole-model measurements already taken: (network fingerprint, per-layer bits) -> median ms."""

OBSERVATIONS_FORMAT = "haq.fit_observations"
OBSERVATIONS_VERSION = 2
"""2: the header names the timing machine (``machine``: its fingerprint identity)."""


def fit_table(
    table: CostTable,
    nets: Sequence[Network],
    runner: Runner,
    n: int,
    out: Path,
    seed: int = 0,
    log: Log | None = None,
    observations: Path | None = None,
) -> CostTable:
    """Measure ``n`` configurations per network, fit boundary rules and corrections, save to ``out``.

    With ``observations``, measurements recorded there for this very table (same ``created``
    stamp and protocol) are reused and every new one is added to the file as each network finishes.
    """
    machine = runner_identity(runner)
    _check_table_machine(table, machine)
    known = load_observations(observations, table, machine) if observations is not None and observations.exists() else {}
    obs: list[Observation] = []
    for net in nets:
        obs += measure_observations(table, net, runner, n, seed, known, log)
        if observations is not None:
            save_observations(observations, table, known, machine)
    fit = fit_boundaries(obs, {net.name: net.layers for net in nets})
    pairs = sorted({p for net in nets for s in supported_pairs(table, net.layers) for p in s})
    rules = tuple(fit.rules(pairs))
    corrections = tuple(_correction(table, net, [o for o in obs if o.network == net.name], fit, rules) for net in nets)
    fitted = {c.fingerprint for c in corrections}
    kept = tuple(c for c in table.data.graph.corrections if c.fingerprint not in fitted)
    result = table.with_graph(GraphExtras(table.data.graph.transitions, rules, kept + corrections))
    save_table(result.data, out)
    if log:
        log(
            f"boundary fit: {_describe(fit)}; corrections: "
            + ", ".join(
                f"{c.network} x{c.scale:.3f} {c.offset:+.4f} ms, {1000 * c.per_int8_layer:.1f} µs per int8 layer"
                for c in corrections
            )
        )
    return result


def _correction(
    table: CostTable, net: Network, mine: Sequence[Observation], fit: BoundaryFit, rules: tuple[TransitionRule, ...]
) -> Correction:
    """The network's correction, fitted on its configurations priced with the new rules."""
    c = fit.per_int8_layer[net.name]
    fp = mine[0].fingerprint
    staged = table.with_graph(
        GraphExtras(table.data.graph.transitions, rules, (Correction(fp, net.name, "latency", 1.0, 0.0, len(mine), c),))
    )
    raw = [staged.policy_cost(net.layers, policy_of(net.layers, o.bits)) for o in mine]
    return fit_correction(raw, [o.measured_ms for o in mine], net.name, fp, per_int8_layer=c)


def fit_policies(table: CostTable, net: Network, n: int, seed: int) -> list[QuantPolicy]:
    """Uniform fp32, uniform int8 (where every layer runs it) and random policies: ``n`` in all."""
    validate.count("configurations per network", n, 3)
    supported = supported_pairs(table, net.layers)
    names = [layer.name for layer in net.layers]
    policies = [QuantPolicy.uniform(names, 32)]
    if all((8, 8) in s for s in supported):
        policies.append(QuantPolicy.uniform(names, 8))
    return policies + sample_policies(net.layers, supported, n - len(policies), seed)


def measure_observations(
    table: CostTable, net: Network, runner: Runner, n: int, seed: int, known: MeasuredCache | None = None, log: Log | None = None
) -> list[Observation]:
    """The :func:`fit_policies` of ``net`` measured end to end; those in ``known`` are not measured again."""
    policies = fit_policies(table, net, n, seed)
    fp = network_fingerprint(net.layers, table.batch)
    bits = [bits_of(net.layers, p) for p in policies]
    known = known if known is not None else {}
    todo = [i for i, b in enumerate(bits) if (fp, b) not in known]
    if todo:
        fresh = runner.measure_many(export_all(net, [policies[i] for i in todo], log))
        known.update({(fp, bits[i]): m.median_ms for i, m in zip(todo, fresh)})
    if log and len(todo) < len(policies):
        log(f"{net.name}: reused {len(policies) - len(todo)} of {len(policies)} whole-model measurements")
    return [Observation(net.name, fp, layer_sum(table, net.layers, p), b, known[(fp, b)]) for p, b in zip(policies, bits)]


def layer_sum(table: CostTable, layers: Sequence[LayerInfo], policy: QuantPolicy) -> float:
    """The sum of the table's per-layer costs, without boundaries or correction."""
    return float(sum(table.layer_cost(layer.signature, policy[layer.name].w_bits, policy[layer.name].a_bits) for layer in layers))


def observations_path(table_path: Path) -> Path:
    """Where ``haq tables fit`` keeps a table's whole-model measurements (not ``*.json``: not a table)."""
    return table_path.with_name(table_path.stem + ".fit.jsonl")


def runner_identity(runner: Runner) -> str:
    """The fingerprint identity of the machine ``runner`` times on (``unknown`` for an agent too old to say)."""
    reported = runner.device_info().get("fingerprint")
    return str(reported.get("identity", "unknown")) if isinstance(reported, dict) else "unknown"


def _check_table_machine(table: CostTable, machine: str) -> None:
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


def _describe(fit: BoundaryFit) -> str:
    return "; ".join(f"{d}: {1000 * f:.1f} µs + {1e6 * p:.2f} ns/elem" for d, (f, p) in fit.per_direction.items())
