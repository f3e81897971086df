"""Does a measured table predict real latency?  Random policies, whole models, end-to-end timing.

``check_table`` draws random mixed-precision policies over the pairs the table says the device
runs, exports each whole model (:func:`haq.export.export_policy`, verified against
onnxruntime's optimized graph), times it twice with the protocol (the second pass is the
retest that bounds what any predictor can reach), and compares the table's prediction —
naive per-layer sum and graph-aware ``policy_cost`` — with the measurement.
``fit_table`` measures other random policies the same way and stores fitted boundary rules and
per-network corrections (:mod:`haq.hardware.graph_fit`) in the table; the whole-model
measurements it used are kept in a small JSON-lines file beside the table, so a refit (a new
fitting method, another model added) re-measures only what that file lacks.

Latency does not depend on weight values, so networks are built untrained (seeded) and
calibrated on a few dataset images: no training is needed to check or fit a table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from haq.core.errors import ConfigError, TableError
from haq.core.fileio import atomic_write_text
from haq.core.types import BitPair, Log
from haq.data import load_dataset
from haq.export import ExportOptions, export_policy
from haq.hardware.device.protocol import Measurement
from haq.hardware.device.runner import Runner
from haq.hardware.graph_fit import (
    BoundaryFit,
    Observation,
    fit_boundaries,
    fit_correction,
)
from haq.models import build_model
from haq.quant import LayerBits, LayerInfo, QuantPolicy, discover_layers
from haq.tables.schema import (
    Correction,
    GraphExtras,
    TableData,
    network_fingerprint,
    parse,
)
from haq.tables.table import CostTable, save_table
from haq.workload import WorkloadConfig

MeasuredCache = dict[tuple[str, tuple[BitPair, ...]], float]  # (network fingerprint, bits) -> median ms
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
    retest_ms: tuple[tuple[float, float], ...]
    bits: tuple[tuple[BitPair, ...], ...]

    def markdown(self) -> str:
        """The check's result as a markdown table."""
        head = "| predictor | configs | within ±5 % | within ±10 % | RMSPE | Spearman |\n|---|---|---|---|---|---|"
        rows = [self.naive.row("naive sum of isolated layers"), self.graph.row("table policy_cost" + ("" if self.graph_aware else " (no graph extras)")),
                self.retest.row("retest (noise ceiling)")]
        span = f"measured {min(self.measured_ms):.4g}–{max(self.measured_ms):.4g} ms"
        return f"{self.network}: {span}\n" + "\n".join([head, *rows])

    def to_dict(self) -> dict[str, object]:
        """Per-policy bits, both measurements and predictions: enough to score another fit offline."""
        return {"network": self.network, "policies": [
            {"bits": [list(b) for b in bits], "measured_ms": list(pair), "naive_ms": n, "graph_ms": g}
            for bits, pair, n, g in zip(self.bits, self.retest_ms, self.naive_ms, self.graph_ms)]}


def check_table(table: CostTable, net: Network, runner: Runner, n: int, seed: int = 1000, log: Log | None = None) -> CheckReport:
    """Measure ``n`` random policies twice and compare them with the table's predictions."""
    if n < 3:
        raise ConfigError(f"--n must be >= 3 for a rank correlation to mean anything, got {n}")
    policies = sample_policies(net.layers, supported_pairs(table, net.layers), n, seed)
    models = export_all(net, policies, log)
    first = _medians(runner.measure_many(models))
    second = _medians(runner.measure_many(models))
    return score(table, net, [_bits_of(net.layers, p) for p in policies], list(zip(first, second)))


def score(table: CostTable, net: Network, bits: Sequence[Sequence[BitPair]], twice_ms: Sequence[tuple[float, float]]) -> CheckReport:
    """Compare ``table`` with policies (per-layer bits) measured twice: no timing, so a refitted
    table can be judged on the measurements of an earlier check (:meth:`CheckReport.to_dict`)."""
    if len(bits) != len(twice_ms) or len(bits) < 3:
        raise ConfigError(f"scoring needs >= 3 policies with two measurements each, got {len(bits)} policies and {len(twice_ms)} measurements")
    policies = [_policy_of(net.layers, b) for b in bits]
    first, second = [a for a, _ in twice_ms], [b for _, b in twice_ms]
    measured = [math.sqrt(a * b) for a, b in twice_ms]
    naive = [naive_cost(table, net.layers, p) for p in policies]
    graph = [table.policy_cost(net.layers, p) for p in policies]
    compiled = table.compile(net.layers)
    return CheckReport(
        network=net.name, naive=accuracy(naive, measured), graph=accuracy(graph, measured), retest=accuracy(second, first),
        graph_aware=compiled.graph_aware or compiled.correction() is not None,
        measured_ms=tuple(measured), naive_ms=tuple(naive), graph_ms=tuple(graph),
        retest_ms=tuple((float(a), float(b)) for a, b in twice_ms), bits=tuple(tuple(tuple(x) for x in b) for b in bits),
    )


def load_check(path: Path, network: str) -> tuple[list[tuple[BitPair, ...]], list[tuple[float, float]]]:
    """Bits and both measurements of every policy in a file written from :meth:`CheckReport.to_dict`."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw["network"] != network:
            raise ValueError(f"it holds {raw['network']!r}, not {network!r}")
        bits = [tuple((int(w), int(a)) for w, a in p["bits"]) for p in raw["policies"]]
        twice = [(float(p["measured_ms"][0]), float(p["measured_ms"][1])) for p in raw["policies"]]
    except (OSError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"saved check {path} is unreadable or malformed ({exc}); write one with haq tables check --save") from None
    return bits, twice


def fit_policies(table: CostTable, net: Network, n: int, seed: int) -> list[QuantPolicy]:
    """Uniform fp32, uniform int8 (where every layer runs it) and random policies: ``n`` in all."""
    if n < 3:
        raise ConfigError(f"fitting needs at least 3 configurations per network, got {n}")
    supported = supported_pairs(table, net.layers)
    names = [l.name for l in net.layers]
    policies = [QuantPolicy.uniform(names, 32)]
    if all((8, 8) in s for s in supported):
        policies.append(QuantPolicy.uniform(names, 8))
    return policies + sample_policies(net.layers, supported, n - len(policies), seed)


def measure_observations(table: CostTable, net: Network, runner: Runner, n: int, seed: int, known: MeasuredCache | None = None,
                         log: Log | None = None) -> list[Observation]:
    """The :func:`fit_policies` of ``net`` measured end to end; those in ``known`` are not measured again."""
    policies = fit_policies(table, net, n, seed)
    fp = network_fingerprint(net.layers, table.batch)
    bits = [_bits_of(net.layers, p) for p in policies]
    known = known if known is not None else {}
    todo = [i for i, b in enumerate(bits) if (fp, b) not in known]
    if todo:
        fresh = _medians(runner.measure_many(export_all(net, [policies[i] for i in todo], log)))
        known.update({(fp, bits[i]): m for i, m in zip(todo, fresh)})
    if log and len(todo) < len(policies):
        log(f"{net.name}: reused {len(policies) - len(todo)} of {len(policies)} whole-model measurements")
    return [Observation(net.name, fp, layer_sum(table, net.layers, p), b, known[(fp, b)]) for p, b in zip(policies, bits)]


def fit_table(table: CostTable, nets: Sequence[Network], runner: Runner, n: int, out: Path, seed: int = 0, log: Log | None = None,
              observations: Path | None = None) -> CostTable:
    """Measure ``n`` configurations per network, fit boundary rules and corrections, save to ``out``.

    With ``observations``, measurements recorded there for this very table (same ``created``
    stamp and protocol) are reused and every new one is added to the file as each network finishes.
    """
    known = load_observations(observations, table) if observations is not None and observations.exists() else {}
    obs: list[Observation] = []
    for net in nets:
        obs += measure_observations(table, net, runner, n, seed, known, log)
        if observations is not None:
            save_observations(observations, table, known)
    layers_of = {net.name: net.layers for net in nets}
    fit = fit_boundaries(obs, layers_of)
    pairs = sorted({p for net in nets for s in supported_pairs(table, net.layers) for p in s})
    rules = fit.rules(pairs)
    corrections = []
    for net in nets:
        mine = [o for o in obs if o.network == net.name]
        c = fit.per_int8_layer[net.name]
        staged = with_graph(table, GraphExtras(table.data.graph.transitions, tuple(rules),
                                               (Correction(mine[0].fingerprint, net.name, "latency", 1.0, 0.0, len(mine), c),)))
        raw = [staged.policy_cost(net.layers, _policy_of(net.layers, o.bits)) for o in mine]
        corrections.append(fit_correction(raw, [o.measured_ms for o in mine], net.name, mine[0].fingerprint, per_int8_layer=c))
    fitted = {c.fingerprint for c in corrections}
    kept = tuple(c for c in table.data.graph.corrections if c.fingerprint not in fitted)
    result = with_graph(table, GraphExtras(table.data.graph.transitions, tuple(rules), kept + tuple(corrections)))
    save_table(result.data, out)
    if log:
        log(f"boundary fit: {_describe(fit)}; corrections: "
            + ", ".join(f"{c.network} x{c.scale:.3f} {c.offset:+.4f} ms, {1000 * c.per_int8_layer:.1f} µs per int8 layer" for c in corrections))
    return result


OBSERVATIONS_FORMAT = "haq.fit_observations"


def observations_path(table_path: Path) -> Path:
    """Where ``haq tables fit`` keeps a table's whole-model measurements (not ``*.json``: not a table)."""
    return table_path.with_name(table_path.stem + ".fit.jsonl")


def save_observations(path: Path, table: CostTable, known: MeasuredCache) -> None:
    """One header line naming the table's build, then one measurement per line (atomic write)."""
    head = {"format": OBSERVATIONS_FORMAT, "version": 1, "device": table.device, "table_created": table.meta["created"],
            "protocol": table.meta["protocol"]}
    lines = [json.dumps(head, sort_keys=True)]
    lines += [json.dumps({"fingerprint": fp, "bits": [list(b) for b in bits], "measured_ms": ms}) for (fp, bits), ms in sorted(known.items())]
    atomic_write_text(path, "\n".join(lines) + "\n")


def load_observations(path: Path, table: CostTable) -> MeasuredCache:
    """Measurements recorded in ``path`` for ``table``; empty (with nothing reused) if they are for another build."""
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        head, body = rows[0], rows[1:]
        if head.get("format") != OBSERVATIONS_FORMAT or head.get("version") != 1:
            raise ValueError(f"format {head.get('format')!r} version {head.get('version')!r}, expected {OBSERVATIONS_FORMAT!r} version 1")
        if (head.get("device"), head.get("table_created"), head.get("protocol")) != (table.device, table.meta["created"], table.meta["protocol"]):
            return {}
        out: MeasuredCache = {}
        for r in body:
            ms = float(r["measured_ms"])
            if not (math.isfinite(ms) and ms > 0):
                raise ValueError(f"measured_ms must be finite and > 0, got {r['measured_ms']!r}")
            out[(str(r["fingerprint"]), tuple((int(w), int(a)) for w, a in r["bits"]))] = ms
        return out
    except (OSError, IndexError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TableError(f"fit observations file {path} is unreadable or malformed ({exc}); delete it to re-measure") from None


def with_graph(table: CostTable, graph: GraphExtras) -> CostTable:
    """A validated copy of ``table`` with other graph extras."""
    data = TableData(meta=table.meta, signatures=table.signatures, entries=tuple(table.entries()), graph=graph)
    return CostTable(parse(data.to_dict(), table.name), table.name, table.path)


def _describe(fit: BoundaryFit) -> str:
    return "; ".join(f"{d}: {1000 * f:.1f} µs + {1e6 * p:.2f} ns/elem" for d, (f, p) in fit.per_direction.items())


def _bits_of(layers: Sequence[LayerInfo], policy: QuantPolicy) -> tuple[BitPair, ...]:
    return tuple((policy[l.name].w_bits, policy[l.name].a_bits) for l in layers)


def _policy_of(layers: Sequence[LayerInfo], bits: Sequence[BitPair]) -> QuantPolicy:
    if len(bits) != len(layers):
        raise ConfigError(f"got bits for {len(bits)} layers, the network has {len(layers)}")
    return QuantPolicy({l.name: LayerBits(int(w), int(a)) for l, (w, a) in zip(layers, bits)})


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
