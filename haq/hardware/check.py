"""Does a measured table predict real latency?  Random policies, whole models, end-to-end timing.

:func:`check_table` draws random mixed-precision policies over the pairs the table says the
device runs, exports each whole model (:func:`haq.export.export_policy`, verified against
onnxruntime's optimized graph), times it twice with the protocol (the second pass is the
retest that bounds what any predictor can reach), and compares the table's prediction —
naive per-layer sum and graph-aware ``policy_cost`` — with the measurement
(:mod:`haq.hardware.accuracy`). :func:`score` does the comparison alone, so a refitted table
can be judged on the measurements of an earlier check. :class:`CheckConfig` is what a check
was asked to do, the same for ``haq tables check`` and a table-check job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from haq.core import jsonio, validate
from haq.core.errors import ConfigError, TableError
from haq.core.types import BitPair, Log
from haq.hardware.accuracy import Accuracy, accuracy
from haq.hardware.device.runner import Runner
from haq.hardware.networks import Network, bits_of, export_all, policy_of, sample_policies, supported_pairs
from haq.quant import LayerInfo, QuantPolicy
from haq.tables.table import CostTable

MIN_POLICIES = 3  # fewer and a rank correlation means nothing


@dataclass(frozen=True)
class CheckReport:
    """Accuracy of the naive sum and of the table's graph-aware cost, and the retest ceiling."""

    network: str
    naive: Accuracy
    graph: Accuracy
    retest: Accuracy
    graph_aware: bool
    measured_ms: tuple[float, ...]
    naive_ms: tuple[float, ...]
    graph_ms: tuple[float, ...]
    retest_ms: tuple[tuple[float, float], ...]
    bits: tuple[tuple[BitPair, ...], ...]

    def markdown(self) -> str:
        """The check's result as a markdown table."""
        head = "| predictor | configs | within ±5 % | within ±10 % | RMSPE | Spearman |\n|---|---|---|---|---|---|"
        graph_label = "table policy_cost" + ("" if self.graph_aware else " (no graph extras)")
        rows = [
            self.naive.row("naive sum of isolated layers"),
            self.graph.row(graph_label),
            self.retest.row("retest (noise ceiling)"),
        ]
        span = f"measured {min(self.measured_ms):.4g}–{max(self.measured_ms):.4g} ms"
        return f"{self.network}: {span}\n" + "\n".join([head, *rows])

    def to_dict(self) -> dict[str, Any]:
        """Per-policy bits, both measurements and predictions: enough to score another fit offline."""
        policies = [
            {"bits": [list(b) for b in bits], "measured_ms": list(pair), "naive_ms": n, "graph_ms": g}
            for bits, pair, n, g in zip(self.bits, self.retest_ms, self.naive_ms, self.graph_ms)
        ]
        return {"network": self.network, "policies": policies}


def check_table(table: CostTable, net: Network, runner: Runner, n: int, seed: int = 1000, log: Log | None = None) -> CheckReport:
    """Measure ``n`` random policies twice and compare them with the table's predictions."""
    validate.count("n", n, MIN_POLICIES)
    policies = sample_policies(net.layers, supported_pairs(table, net.layers), n, seed)
    models = export_all(net, policies, log, table.export_weights)
    first = [m.latency_ms for m in runner.measure_many(models)]
    second = [m.latency_ms for m in runner.measure_many(models)]
    return score(table, net, [bits_of(net.layers, p) for p in policies], list(zip(first, second)))


def score(
    table: CostTable, net: Network, bits: Sequence[Sequence[BitPair]], twice_ms: Sequence[tuple[float, float]]
) -> CheckReport:
    """Compare ``table`` with policies (per-layer bits) measured twice; nothing is timed."""
    if len(bits) != len(twice_ms) or len(bits) < MIN_POLICIES:
        raise TableError(
            f"scoring a table needs >= {MIN_POLICIES} policies measured twice each, "
            f"got {len(bits)} policies and {len(twice_ms)} measurement pairs"
        )
    policies = [policy_of(net.layers, b) for b in bits]
    first, second = [a for a, _ in twice_ms], [b for _, b in twice_ms]
    measured = [math.sqrt(a * b) for a, b in twice_ms]
    naive = [naive_cost(table, net.layers, p) for p in policies]
    graph = [table.policy_cost(net.layers, p) for p in policies]
    compiled = table.compile(net.layers)
    return CheckReport(
        network=net.name,
        naive=accuracy(naive, measured),
        graph=accuracy(graph, measured),
        retest=accuracy(second, first),
        graph_aware=compiled.graph_aware or compiled.correction() is not None,
        measured_ms=tuple(measured),
        naive_ms=tuple(naive),
        graph_ms=tuple(graph),
        retest_ms=tuple((float(a), float(b)) for a, b in twice_ms),
        bits=tuple(tuple(tuple(x) for x in b) for b in bits),
    )


def naive_cost(table: CostTable, layers: Sequence[LayerInfo], policy: QuantPolicy) -> float:
    """The sum of isolated single-layer times: ``extra.isolated_ms`` where the builder kept it
    (measured CPU entries store in-context costs), else the entry's cost."""
    total = 0.0
    for layer in layers:
        e = table.entry(layer.signature, policy[layer.name].w_bits, policy[layer.name].a_bits)
        total += float(e.extra.get("isolated_ms", e.latency_ms))
    return total


def load_check(path: Path, network: str) -> tuple[list[tuple[BitPair, ...]], list[tuple[float, float]]]:
    """Bits and both measurements of every policy in a file written from :meth:`CheckReport.to_dict`."""
    try:
        raw = jsonio.read_json(path, "saved check", error=TableError)
        if raw["network"] != network:
            raise ValueError(f"it holds {raw['network']!r}, not {network!r}")
        bits = [tuple((int(w), int(a)) for w, a in p["bits"]) for p in raw["policies"]]
        twice = [(float(p["measured_ms"][0]), float(p["measured_ms"][1])) for p in raw["policies"]]
    except (OSError, KeyError, TypeError, ValueError, IndexError, TableError) as exc:
        raise TableError(
            f"saved check {path} is unreadable or malformed ({exc}); write one with haq tables check --save"
        ) from None
    return bits, twice


@dataclass(frozen=True)
class CheckConfig:
    """Validated ``haq tables check`` arguments."""

    model: str
    table: str
    n: int
    sessions: int
    seed: int
    save: Path | None
    rescore: Path | None

    def __post_init__(self) -> None:
        validate.count("--n", self.n, 3, 1000)
        validate.count("--sessions", self.sessions, 1, 100)
        validate.count("--seed", self.seed, 0)
        if self.rescore is not None and not self.rescore.is_file():
            raise ConfigError(f"--rescore needs a file written by --save, {self.rescore} does not exist")
