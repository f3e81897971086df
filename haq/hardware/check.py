"""Does a measured table predict real latency?  Random policies, whole models, end-to-end timing.

``check_table`` draws random mixed-precision policies over the pairs the table says the device
runs, exports each whole model (:func:`haq.export.export_policy`, verified against
onnxruntime's optimized graph), times it twice with the protocol (the second pass is the
retest that bounds what any predictor can reach), and compares the table's prediction —
naive per-layer sum and graph-aware ``policy_cost`` — with the measurement.
``fit_table`` measures other random policies the same way and stores fitted boundary rules and
per-network corrections (:mod:`haq.hardware.graph_cost`) in the table.

Latency does not depend on weight values, so networks are built untrained (seeded) and
calibrated on a few dataset images: no training is needed to check or fit a table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from haq.data import load_dataset
from haq.errors import ConfigError, TableError
from haq.export import ExportOptions, export_policy
from haq.hardware.graph_cost import BoundaryFit, Observation, fit_boundaries, fit_correction
from haq.hardware.protocol import Measurement
from haq.hardware.runner import Runner
from haq.hardware.schema import GraphExtras, TableData, network_fingerprint, parse
from haq.hardware.table import CostTable, save_table
from haq.models import build_model
from haq.quant import LayerBits, LayerInfo, QuantPolicy, discover_layers
from haq.workload import WorkloadConfig

Log = Callable[[str], None]
BitPair = tuple[int, int]
CALIBRATION_IMAGES = 16


@dataclass(frozen=True)
class Network:
    """An untrained, seeded instance of a model with what exporting it needs."""

    name: str
    model: nn.Module
    layers: list[LayerInfo]
    input_shape: tuple[int, ...]
    calibration: torch.Tensor


def load_network(model: str, dataset: str | None = None, data_root: str | None = None, seed: int = 0) -> Network:
    """Build ``model`` (zoo name or ``package.module:callable``) untrained, with calibration images."""
    cfg = WorkloadConfig(model=model, dataset=dataset, data_root=data_root, seed=seed)
    data = load_dataset(cfg.resolved_dataset(), data_root, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(model, data.input_shape, data.num_classes).eval()
    x, _ = data.subset("train", CALIBRATION_IMAGES)
    return Network(model, net, discover_layers(net, data.input_shape), tuple(data.input_shape), x)


def sample_policies(layers: Sequence[LayerInfo], supported: Sequence[Sequence[BitPair]], n: int, seed: int) -> list[QuantPolicy]:
    """``n`` random policies: half pick each layer's pair independently, half in contiguous runs.

    Runs of equal precision are what a search that sees boundary costs produces; independent
    draws are the most fragmented case. Both are drawn only from pairs the device runs.
    """
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        if k % 2 == 0:
            picks = [tuple(s[rng.integers(len(s))]) for s in supported]
        else:
            cuts = set(rng.choice(np.arange(1, len(layers)), size=min(len(layers) - 1, int(rng.integers(1, 4))), replace=False).tolist()) if len(layers) > 1 else set()
            picks, current = [], None
            for i, s in enumerate(supported):
                if current is None or i in cuts or current not in s:
                    current = tuple(s[rng.integers(len(s))])
                picks.append(current)
        out.append(QuantPolicy({l.name: LayerBits(int(w), int(a)) for l, (w, a) in zip(layers, picks)}, {"drawn": "haq.hardware.check", "seed": seed, "index": k}))
    return out


def export_all(net: Network, policies: Sequence[QuantPolicy], log: Log | None = None) -> list[bytes]:
    """Exported, verified ONNX bytes of every policy."""
    out = []
    for i, p in enumerate(policies, 1):
        out.append(export_policy(net.model, net.layers, p, net.input_shape, net.calibration, ExportOptions()).onnx_bytes)
        if log and (i % 5 == 0 or i == len(policies)):
            log(f"{net.name}: exported {i}/{len(policies)} policies")
    return out


def naive_cost(table: CostTable, layers: Sequence[LayerInfo], policy: QuantPolicy) -> float:
    """The sum of isolated single-layer times: ``extra.isolated_ms`` where the builder kept it
    (measured CPU entries store in-context costs), else the entry's cost."""
    total = 0.0
    for l in layers:
        e = table.entry(l.signature, policy[l.name].w_bits, policy[l.name].a_bits)
        total += float(e.extra.get("isolated_ms", e.latency_ms))
    return total


def layer_sum(table: CostTable, layers: Sequence[LayerInfo], policy: QuantPolicy) -> float:
    """The sum of the table's per-layer costs, without boundaries or correction."""
    return float(sum(table.layer_cost(l.signature, policy[l.name].w_bits, policy[l.name].a_bits) for l in layers))


def supported_pairs(table: CostTable, layers: Sequence[LayerInfo]) -> list[list[BitPair]]:
    """Per layer, the measured pairs the table holds (emulated / analytical pairs are not drawn)."""
    table.check_covers(layers)
    out = []
    for l in layers:
        pairs = [p for p in table.supported_bits(l.signature) if table.entry(l.signature, *p).source == "measured"]
        if not pairs:
            raise TableError(f"table {table.name} has no measured entry for layer '{l.name}'; a check needs a measured table")
        out.append(pairs)
    return out


@dataclass(frozen=True)
class Accuracy:
    """How well predictions match measurements."""

    n: int
    within5: float
    within10: float
    rmspe: float
    spearman: float

    def row(self, label: str) -> str:
        """One markdown table row."""
        return f"| {label} | {self.n} | {100 * self.within5:.0f} % | {100 * self.within10:.0f} % | {100 * self.rmspe:.1f} % | {self.spearman:.2f} |"


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

    def markdown(self) -> str:
        """The check's result as a markdown table."""
        head = "| predictor | configs | within ±5 % | within ±10 % | RMSPE | Spearman |\n|---|---|---|---|---|---|"
        rows = [self.naive.row("naive sum of isolated layers"), self.graph.row("table policy_cost" + ("" if self.graph_aware else " (no graph extras)")),
                self.retest.row("retest (noise ceiling)")]
        span = f"measured {min(self.measured_ms):.4g}–{max(self.measured_ms):.4g} ms"
        return f"{self.network}: {span}\n" + "\n".join([head, *rows])


def check_table(table: CostTable, net: Network, runner: Runner, n: int, seed: int = 1000, log: Log | None = None) -> CheckReport:
    """Measure ``n`` random policies twice and compare them with the table's predictions."""
    if n < 3:
        raise ConfigError(f"--n must be >= 3 for a rank correlation to mean anything, got {n}")
    policies = sample_policies(net.layers, supported_pairs(table, net.layers), n, seed)
    models = export_all(net, policies, log)
    first = _medians(runner.measure_many(models))
    second = _medians(runner.measure_many(models))
    measured = [math.sqrt(a * b) for a, b in zip(first, second)]
    naive = [naive_cost(table, net.layers, p) for p in policies]
    graph = [table.policy_cost(net.layers, p) for p in policies]
    compiled = table.compile(net.layers)
    return CheckReport(
        network=net.name, naive=accuracy(naive, measured), graph=accuracy(graph, measured), retest=accuracy(second, first),
        graph_aware=compiled.graph_aware or compiled.correction() is not None,
        measured_ms=tuple(measured), naive_ms=tuple(naive), graph_ms=tuple(graph),
    )


def measure_observations(table: CostTable, net: Network, runner: Runner, n: int, seed: int, log: Log | None = None) -> list[Observation]:
    """Uniform fp32, uniform int8 and ``n - 2`` random policies, measured end to end."""
    if n < 3:
        raise ConfigError(f"fitting needs at least 3 configurations per network, got {n}")
    supported = supported_pairs(table, net.layers)
    names = [l.name for l in net.layers]
    policies = [QuantPolicy.uniform(names, 32)]
    if all((8, 8) in s for s in supported):
        policies.append(QuantPolicy.uniform(names, 8))
    policies += sample_policies(net.layers, supported, n - len(policies), seed)
    measured = _medians(runner.measure_many(export_all(net, policies, log)))
    fp = network_fingerprint(net.layers, table.batch)
    return [Observation(net.name, fp, layer_sum(table, net.layers, p), tuple((p[l.name].w_bits, p[l.name].a_bits) for l in net.layers), m)
            for p, m in zip(policies, measured)]


def fit_table(table: CostTable, nets: Sequence[Network], runner: Runner, n: int, out: Path, seed: int = 0, log: Log | None = None) -> CostTable:
    """Measure ``n`` configurations per network, fit boundary rules and corrections, save to ``out``."""
    obs: list[Observation] = []
    for net in nets:
        obs += measure_observations(table, net, runner, n, seed, log)
    layers_of = {net.name: net.layers for net in nets}
    fit = fit_boundaries(obs, layers_of)
    pairs = sorted({p for net in nets for s in supported_pairs(table, net.layers) for p in s})
    rules = fit.rules(pairs)
    staged = with_graph(table, GraphExtras(table.data.graph.transitions, tuple(rules), ()))
    corrections = []
    for net in nets:
        mine = [o for o in obs if o.network == net.name]
        policies = [QuantPolicy({l.name: LayerBits(*b) for l, b in zip(net.layers, o.bits)}) for o in mine]
        raw = [staged.policy_cost(net.layers, p) for p in policies]
        corrections.append(fit_correction(raw, [o.measured_ms for o in mine], net.name, mine[0].fingerprint))
    fitted = {c.fingerprint for c in corrections}
    kept = tuple(c for c in table.data.graph.corrections if c.fingerprint not in fitted)
    result = with_graph(table, GraphExtras(table.data.graph.transitions, tuple(rules), kept + tuple(corrections)))
    save_table(result.data, out)
    if log:
        log(f"boundary fit: {_describe(fit)}; corrections: " + ", ".join(f"{c.network} x{c.scale:.3f} {c.offset:+.4f} ms" for c in corrections))
    return result


def with_graph(table: CostTable, graph: GraphExtras) -> CostTable:
    """A validated copy of ``table`` with other graph extras."""
    data = TableData(meta=table.meta, signatures=table.signatures, entries=tuple(table.entries()), graph=graph)
    return CostTable(parse(data.to_dict(), table.name), table.name, table.path)


def _describe(fit: BoundaryFit) -> str:
    return "; ".join(f"{d}: {1000 * f:.1f} µs + {1e6 * p:.2f} ns/elem" for d, (f, p) in fit.per_direction.items())


def _medians(ms: Sequence[Measurement]) -> list[float]:
    return [m.median_ms for m in ms]


# ---- pure statistics -----------------------------------------------------------------------

def within(pred: Sequence[float], meas: Sequence[float], tol: float) -> float:
    """Share of predictions within ``±tol`` (relative) of the measurement."""
    p, m = _arrays(pred, meas)
    return float(np.mean(np.abs(p / m - 1.0) <= tol + 1e-12))


def rmspe(pred: Sequence[float], meas: Sequence[float]) -> float:
    """Root mean squared percentage error, as a fraction."""
    p, m = _arrays(pred, meas)
    return float(np.sqrt(np.mean(((p - m) / m) ** 2)))


def spearman(pred: Sequence[float], meas: Sequence[float]) -> float:
    """Spearman rank correlation (ties averaged); ``nan`` when either side is constant."""
    p, m = _arrays(pred, meas)
    if len(p) < 2 or np.all(p == p[0]) or np.all(m == m[0]):
        return float("nan")
    return float(spearmanr(p, m).statistic)


def accuracy(pred: Sequence[float], meas: Sequence[float]) -> Accuracy:
    """All check statistics of one predictor."""
    return Accuracy(len(meas), within(pred, meas, 0.05), within(pred, meas, 0.10), rmspe(pred, meas), spearman(pred, meas))


def _arrays(pred: Sequence[float], meas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p, m = np.asarray(pred, dtype=float), np.asarray(meas, dtype=float)
    if p.shape != m.shape or p.ndim != 1 or len(p) == 0:
        raise ConfigError(f"predictions and measurements must be equal-length non-empty lists, got {p.shape} and {m.shape}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(m)) and np.all(m > 0)):
        raise ConfigError("predictions must be finite and measurements finite and positive")
    return p, m
