"""Benchmark measured CPU tables: build time, and whether predictions hold for networks never measured whole.

Per network (zoo models the CPU table covers, plus networks defined only here) it builds or
extends one measured table and times that; then measures every network's fit configurations
and fresh random policies (each twice) end to end in one batch, round-robin over all of them,
times what each network's fit took in it, and scores, in the same run:

(a) leave-one-network-out: device terms fitted on the OTHER networks only, no whole-model
    measurement of this one (what a new model gets);
(b) fitted on every network, this one included, as ``haq tables fit`` fits: its family's device terms
    and its own correction, or device terms of its own where its distinct fit configurations allow;
(c) the retest ceiling: the two measurements of each policy against each other;

and (a) by parts, as ``haq tables fit --by-parts`` prices a network it never times whole: every
node onnxruntime compiles for every configuration, its layer kernels and the nodes between them,
is timed alone in the same batch (:mod:`haq.hardware.parts`), one call overhead fitted on the
other networks' measurements; then the network's own terms fitted on its fit configurations
priced that way, and with each price first blended with the other networks' device terms
(:func:`haq.hardware.fit.blend_with_terms`); by parts with the overhead fitted per kind; by parts
with the call overhead timed instead (what ``--by-parts`` uses with no network measured whole
beside it); and as format version 10 priced by parts, the layers by their single-layer entries
and the overheads per kind. A raw file from before the layer kernels were timed alone is scored
without the by-parts figures.

    python bench/tables.py --models resnet20 digits_cnn digits_mlp --n 16 --raw raw.json --out tables.json
    python bench/tables.py --models resnet20 digits_cnn --raw raw.json --rescore   # score a subset again, time nothing
    python bench/tables.py --raw raw.json --rescore --configs 12   # fit on the first 12 configurations only
    python bench/tables.py --raw raw.json --rescore --form "int8 fixed+out by op, float out, weight-only fixed"

Zoo models at 224x224 (``resnet18``, ``mobilenet_v2``) are skipped (a table for them takes
hours on one thread); the output says so. The fit set is every network scored. Two of the
networks defined here (``sepnet``: MobileNetV1-style depthwise + 1x1 pairs; ``irnet``:
inverted-residual blocks at other widths and expansion) give a fit depthwise and 1x1 layers
from networks other than MobileNetV2, so MobileNetV2's (a) is a prediction from other networks
with those ops.

(c) is also printed under protocol version 2's statistic (the median of session medians) on the
same sessions, so the two statistics' retest ceilings are compared within one run.

(a) and (b) compare whole-model times with single-layer entries timed earlier in the run, so
they hold only if the machine kept its speed: the calibration probe is timed before the build,
after it and at the end, and the output says when it moved by more than 10 % (a shared machine
whose neighbours change load; re-run when it is quieter). Every single-layer model of the table
is also timed again in the batch, and (a) and (b) are scored once more on those entries, beside
how far each network's layer sums moved between the build and the batch: an (a) that misses on
both is the device terms', one that misses only on the build's entries is the machine's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from haq.hardware.accuracy import Accuracy, accuracy
from haq.hardware.build import extend_table
from haq.hardware.device.machine import probe_ms
from haq.hardware.device.runner import LocalRunner
from haq.hardware.device.sentinel import sentinel_model
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.fit import FIT_CONFIGS, blend_with_terms, fit_graph, fit_policies, layer_sum, observe
from haq.hardware.graph_fit import DEFAULT_FORM, FORMS, OWN_FORM, PRIOR_WEIGHT
from haq.hardware.measured import MeasuredBackend, entry_model
from haq.hardware.networks import Network, bits_of, export_all, load_network, policy_of, sample_policies, supported_pairs
from haq.hardware.parts import (
    NODE,
    NodeSet,
    Parts,
    bounded_overhead,
    call_cost_models,
    fit_overhead,
    parts_ms,
    timed_call_cost,
    uniform,
)
from haq.models import model_names
from haq.models.mobilenet import MobileNetV2Small
from haq.models.resnet import BasicBlock
from haq.quant import LayerInfo, QuantPolicy, discover_layers
from haq.tables.schema import CALL_KINDS, DOMAINS, RunOverhead, kernel_share, network_family, term_domain
from haq.tables.table import CostTable, load_table

DRIFT_LIMIT = 0.10
"""Largest change of the calibration probe over a run before the output warns."""
SLOW = {"resnet18": "224x224 input: hours of single-layer timing", "mobilenet_v2": "224x224 input: hours of single-layer timing"}


class PlainVGG(nn.Module):
    """Six 3x3 convs (16-16, 32-32, 64-64) with two max-pools, global pooling, one classifier: no residual adds."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        chans = [(in_channels, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64)]
        mods: list[nn.Module] = []
        for i, (a, b) in enumerate(chans):
            mods += [nn.Conv2d(a, b, 3, padding=1), nn.ReLU()]
            if i in (1, 3):
                mods.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*mods)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class WideResNet(nn.Module):
    """ResNet-18's stem at 24 channels (3x3 conv, 3x3/2 max-pool), four residual blocks 24-48-48-96
    wide, 40x40 input: not ResNet-20's widths or strides, and a second network with a max-pool
    (besides vgg6's 2x2 ones), so the max-pool boundary term is fitted when either is left out."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 24, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.blocks = nn.Sequential(BasicBlock(24, 24, 1), BasicBlock(24, 48, 2), BasicBlock(48, 48, 1), BasicBlock(48, 96, 2))
        self.fc = nn.Linear(96, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.pool(torch.relu(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class SeparableNet(nn.Module):
    """MobileNetV1-style: a 3x3 stem, then depthwise 3x3 + pointwise 1x1 pairs 16-32-64-64-128
    wide with two strided depthwise convs, 36x36 input: depthwise and 1x1 convs without
    MobileNetV2's expansion, projection or residual adds."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU()]
        for a, b, stride in [(16, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2)]:
            mods += [nn.Conv2d(a, a, 3, stride=stride, padding=1, groups=a), nn.ReLU(), nn.Conv2d(a, b, 1), nn.ReLU()]
        self.features = nn.Sequential(*mods)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def inverted_net(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    """Inverted-residual blocks at other widths, expansion 4 and depth than the zoo's MobileNetV2, 28x28 input."""
    setting = ((1, 16, 1, 1), (4, 24, 1, 2), (4, 40, 2, 2))
    return MobileNetV2Small(in_channels, num_classes, width=1.0, setting=setting, head=128)


BENCH_NETS: dict[str, tuple[Callable[[int], nn.Module], tuple[int, int, int]]] = {
    "vgg6": (PlainVGG, (3, 32, 32)),
    "wres": (WideResNet, (3, 40, 40)),
    "sepnet": (SeparableNet, (3, 36, 36)),
    "irnet": (inverted_net, (3, 28, 28)),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_network(name: str) -> Network:
    """A network defined only here, untrained and seeded, calibrated on seeded random images."""
    cls, shape = BENCH_NETS[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = cls(shape[0]).eval()
    calib = torch.rand((16, *shape), generator=torch.Generator().manual_seed(0))
    return Network(name, model, discover_layers(model, shape), shape, calib)


def bits(rows: Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    """A configuration's per-layer (w, a) bits as kept in the raw JSON, as tuples."""
    return tuple((int(w), int(a)) for w, a in rows)


def predict(table: CostTable, net: Network, bits: Sequence[tuple[tuple[int, int], ...]]) -> list[float]:
    """The table's cost of each configuration."""
    return [table.policy_cost(net.layers, policy_of(net.layers, b)) for b in bits]


def pooled(overheads: Sequence[RunOverhead]) -> RunOverhead:
    """One call-time probe from several measurements of it: their median."""
    return RunOverhead("latency", 0.0, float(np.median([o.probe_ms for o in overheads])))


def acc_dict(a: Accuracy) -> dict[str, float]:
    """JSON form of one predictor's figures."""
    return {"n": a.n, "within5": a.within5, "within10": a.within10, "rmspe": a.rmspe, "spearman": a.spearman}


def cells(a: Accuracy) -> str:
    """Markdown cells: within ±5 %, ±10 %, RMSPE, Spearman."""
    return f"{100 * a.within5:.0f} % | {100 * a.within10:.0f} % | {100 * a.rmspe:.1f} % | {a.spearman:.2f}"


def main() -> int:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=[m for m in model_names() if m not in SLOW], help="zoo models")
    p.add_argument("--bench-nets", nargs="*", default=list(BENCH_NETS), choices=list(BENCH_NETS))
    p.add_argument("--n", type=int, default=16, help="random policies checked per network (each measured twice)")
    p.add_argument(
        "--configs",
        type=int,
        default=FIT_CONFIGS,
        help="configurations measured per network for the fit (with --rescore: fit on the first this many kept)",
    )
    p.add_argument("--sessions", type=int, default=ProtocolConfig().sessions, help="most sessions per model")
    p.add_argument(
        "--ci-rel",
        type=float,
        default=ProtocolConfig().ci_rel,
        help="early stop: two lowest session floors within this fraction (0: off)",
    )
    p.add_argument("--out", type=Path, default=None, help="write all figures and per-policy data as JSON")
    p.add_argument("--raw", type=Path, default=None, help="keep the measurements here (and the table beside it)")
    p.add_argument("--rescore", action="store_true", help="score the measurements kept in --raw again; time nothing")
    p.add_argument("--form", default=DEFAULT_FORM, choices=[*FORMS, "auto"], help="device-term form of every fit")
    p.add_argument(
        "--own-form",
        default=OWN_FORM,
        choices=[*FORMS, ""],
        help="form of each network's own terms ('': the device terms' form, as before)",
    )
    p.add_argument("--shared-terms", action="store_true", help="one set of device terms for every network family")
    p.add_argument(
        "--prior-weight",
        type=float,
        default=PRIOR_WEIGHT,
        help="pull of a network's own terms toward its family's, in observations (0: none)",
    )
    ns = p.parse_args()
    for m in ns.models:
        if m in SLOW:
            print(f"skipping {m}: {SLOW[m]}")
    zoo = [m for m in ns.models if m not in SLOW]
    for m in sorted(set(model_names()) - set(zoo)):
        if m not in SLOW:
            print(f"not run: {m} (not asked for)")
    if not (np.isfinite(ns.prior_weight) and ns.prior_weight >= 0.0):
        p.error(f"--prior-weight must be a finite number >= 0, got {ns.prior_weight}")
    if ns.configs < 3:
        p.error(f"--configs must be at least 3 (the fewest a fit can use), got {ns.configs}")
    if len(zoo) + len(ns.bench_nets) < 2:
        p.error("leaving one network out needs at least 2 networks (--models and --bench-nets together)")
    protocol = ProtocolConfig(sessions=ns.sessions, ci_rel=ns.ci_rel, threads=1)
    nets = [load_network(m) for m in zoo] + [bench_network(b) for b in ns.bench_nets]
    raw_path = ns.raw or Path(tempfile.mkdtemp(prefix="haq-bench-")) / "raw.json"
    table_path = raw_path.with_suffix(".table.json")
    if not ns.rescore:
        raw_path.write_text(json.dumps(measure(nets, protocol, table_path, ns.n, ns.configs)))
    raw = json.loads(raw_path.read_text())
    raw["fit"] = {name: rows[: ns.configs] for name, rows in raw["fit"].items()}  # the first ones: a smaller run's
    result = score(
        load_table(table_path),
        [n for n in nets if n.name in raw["fit"]],
        raw,
        ns.form,
        ns.shared_terms,
        ns.prior_weight,
        ns.own_form or None,
    )
    result["protocol"] = protocol.record()
    print(
        f"protocol: <= {ns.sessions} sessions, early stop ±{ns.ci_rel:g}; "
        f"{max(len(rows) for rows in raw['fit'].values())} fit configurations, "
        f"{len(next(iter(raw['check'].values())))} checked policies per network; measurements in {raw_path}; "
        f"device-term form {ns.form!r}; own terms in form {ns.own_form or ns.form!r}, pulled toward the family's with "
        f"weight {ns.prior_weight:g}; "
        + ("one set of device terms for every network" if ns.shared_terms else "device terms per network family")
    )
    print(
        "| network | build (s) | fit meas. (s) | (a) ±5 % | (a) ±10 % | (a) RMSPE | (a) ρ | (b) ±5 % | (b) ±10 % "
        "| (b) RMSPE | (b) ρ | (c) ±5 % | (c) ±10 % | (c) RMSPE | (c) ρ |"
    )
    print("|---" * 15 + "|")
    for name, r in result["networks"].items():
        a, b, c = (Accuracy(**r[k]) for k in ("a_leave_one_out", "b_fitted", "c_retest"))
        print(f"| {name} | {r['build_s']:.0f} | {r['fit_measure_s']:.0f} | {cells(a)} | {cells(b)} | {cells(c)} |")
    if any("a_parts" in r for r in result["networks"].values()):
        print(
            "\n(a) by parts, as `haq tables fit --model OTHERS... NEW --by-parts NEW` prices a network it never times whole: "
            "every node onnxruntime compiled for it, its layer kernels as the network runs them and the nodes between "
            "them, each timed alone, less one call overhead for each isolated model but one, fitted on the other "
            "networks' whole-model measurements, and the timed cost of each byte of output an isolated model hands "
            "back; then the network's own device terms fitted on its fit configurations "
            "priced that way (what the search uses), and with each price first blended with the other networks' device "
            "terms (geometric mean, `--blend-with-terms`); then by parts with one overhead fitted per kind (float / "
            "int8 / weight-only kernel, node); by parts with the overhead timed instead (a one-node model against a "
            "chain of them: what `--by-parts` uses when no network is measured whole beside it); last, as table format "
            "10 priced by parts: the layers by their single-layer entries, the overheads fitted per kind"
        )
        print(
            "| network | (a) parts ±5 % | ±10 % | RMSPE | ρ | (a) parts → terms ±5 % | ±10 % | RMSPE | ρ "
            "| blended ±10 % | overhead fitted (µs) | per kind: ±10 % (float / int8 / weight-only / node, µs) "
            "| timed overhead: ±10 % (µs) | layers by entries, per kind: ±10 % |"
        )
        print("|---" * 14 + "|")
        for name, r in result["networks"].items():
            pa, pt, pk, pq, pe = (
                Accuracy(**r[k])
                for k in ("a_parts", "a_parts_terms", "a_parts_by_kind", "a_parts_timed_overhead", "a_parts_entries")
            )
            blend = Accuracy(**r["a_parts_terms_blended"])
            kinds = " / ".join(f"{1000 * r['parts_by_kind_ms'][k]:.2f}" for k in CALL_KINDS)
            print(
                f"| {name} | {cells(pa)} | {cells(pt)} | {100 * blend.within10:.0f} % | {1000 * r['parts_overhead_ms']:.2f} "
                f"| {100 * pk.within10:.0f} % ({kinds}) "
                f"| {100 * pq.within10:.0f} % ({1000 * r['parts_timed_overhead_ms']:.2f}) | {100 * pe.within10:.0f} % |"
            )
        parts_row = next(r for r in result["networks"].values() if "a_parts" in r)
        print(
            "cost per byte of output an isolated model hands back, timed beside the nodes: "
            f"{1024e6 * parts_row['parts_output_ms_per_byte']:.1f} ns per KiB (0: a raw file from before it was timed)"
        )
    elif raw.get("op_ms"):
        print("\n(a) by parts: not scored; this raw file predates timing the layer kernels alone (re-measure without --rescore)")
    v2_retest = {name: Accuracy(**r["c_retest_median"]) for name, r in result["networks"].items() if "c_retest_median" in r}
    if v2_retest:
        print(
            "(c) on the same sessions under protocol version 2's statistic (median of session medians), within ±5 / ±10 %: "
            + "; ".join(f"{name} {100 * c.within5:.0f} / {100 * c.within10:.0f} %" for name, c in v2_retest.items())
        )
    if "entry_ms" in raw:  # older raw files lack it
        result["retimed"] = print_retimed(load_table(table_path), [n for n in nets if n.name in raw["fit"]], raw, ns)
    corrected = [name for name in result["networks"] if name not in result["own_terms"]]
    print(
        f"(b) by device terms of their own: {', '.join(result['own_terms']) or 'none'}; "
        f"by a correction: {', '.join(corrected) or 'none'}"
    )
    print(f"load average (1/5/15 min): before {raw['load_before']}, after {raw['load_after']}")
    probes = raw.get("machine_probe_ms", [])
    if probes:
        drift = max(probes) / min(probes) - 1.0
        print(f"machine probe (ms, in the order taken, the build's first): {', '.join(f'{x:.4f}' for x in probes)}")
        if drift > DRIFT_LIMIT:
            print(
                f"the machine's speed moved by {100 * drift:.0f} % during the run: (a) and (b) compare times taken at "
                "different speeds and understate what the device terms can do; re-run on a quieter machine"
            )
    if ns.out is not None:
        ns.out.write_text(json.dumps(result, indent=1))
    return 0


def retimed(table: CostTable, entry_ms: Sequence[Sequence[Any]]) -> CostTable:
    """``table`` with every entry's isolated-model time replaced by the one timed again in the
    batch (times the build's kernel share): layer costs from the checks' own time window."""
    ms = {(str(k), int(w), int(a)): float(v) for k, w, a, v in entry_ms}
    return table.with_entries([replace(e, latency_ms=ms[(e.key, e.w_bits, e.a_bits)] * kernel_share(e)) for e in table.entries()])


def print_retimed(table: CostTable, nets: Sequence[Network], raw: dict[str, Any], ns: argparse.Namespace) -> dict[str, Any]:
    """(a) and (b) again from the single-layer entries timed in the batch beside the checks, and
    how far those entries moved since the build: whether (a) misses because the device terms
    do not travel between networks or because the machine's speed moved between the build and
    the checks (it switches state over minutes; latency_tables/README.md)."""
    again = retimed(table, raw["entry_ms"])
    result = score(again, nets, raw, ns.form, ns.shared_terms, ns.prior_weight, ns.own_form or None)
    print(
        "\n(a) and (b) with every single-layer entry timed again in the checks' batch (the build's kernel shares; "
        "`haq tables fit` fits on entries timed so, so this (b) is the command's), and the checks' layer sums under "
        "those entries against the build's"
    )
    print(
        "| network | (a) ±5 % | (a) ±10 % | (a) RMSPE | (a) ρ | (b) ±5 % | (b) ±10 % | (b) RMSPE | (b) ρ "
        "| layer sums, batch / build: median | within ±5 % | within ±10 % |"
    )
    print("|---" * 12 + "|")
    for net in nets:
        r = result["networks"][net.name]
        checked = [bits(row[0]) for row in raw["check"][net.name]]
        build, batch = predict(table, net, checked), predict(again, net, checked)
        moved = accuracy(batch, build)
        ratio = float(np.median(np.divide(batch, build)))
        r["layer_sums_batch_over_build"] = acc_dict(moved) | {"median_ratio": ratio}
        a, b = Accuracy(**r["a_leave_one_out"]), Accuracy(**r["b_fitted"])
        print(
            f"| {net.name} | {cells(a)} | {cells(b)} | {ratio:.3f} | {100 * moved.within5:.0f} % | {100 * moved.within10:.0f} % |"
        )
    return result


def measure(nets: Sequence[Network], protocol: ProtocolConfig, table_path: Path, n: int, configs: int) -> dict[str, Any]:
    """Build the table (timed per network), then measure every network's fit configurations and
    its checked policies twice in ONE interleaved batch: everything :func:`score` needs, as JSON.

    One batch, round-robin over all of them, puts the fit data of every network, the checks and
    their retest in the same time window, so a change of machine speed moves all of them alike
    (measured in separate phases minutes apart, a network's fit data and its checks disagreed by
    up to 45 % on this machine while the call-time probe held still). A network's fit time is
    what its own fit configurations cost in that batch: their export, their timing (each
    measurement's wall time) and the fit itself."""
    runner = LocalRunner(protocol, log)
    raw: dict[str, Any] = {
        "load_before": os.getloadavg(),
        "build_s": {},
        "fit_s": {},
        "probe_ms": {},
        "fit": {},
        "check": {},
        "check_median": {},
    }
    raw["machine_probe_ms"] = [probe_ms()]
    for net in nets:  # in order: a network's build time counts only signatures not already measured
        t0 = time.perf_counter()
        rep = extend_table(
            MeasuredBackend(protocol, log), [layer.signature for layer in net.layers], table_path, 1, models=[net.name], log=log
        )
        raw["build_s"][net.name] = time.perf_counter() - t0
        log(f"built {net.name}: {rep.added} new signatures, {rep.kept} shared, {raw['build_s'][net.name]:.0f} s")
    raw["machine_probe_ms"].append(probe_ms())
    table = load_table(table_path)
    models: list[bytes] = []
    plans = []
    for net in nets:
        t0 = time.perf_counter()
        fit = fit_policies(table, net, configs, 0)
        models += export_all(net, fit, log, table.export_weights)
        export_s = time.perf_counter() - t0
        checks = sample_policies(net.layers, supported_pairs(table, net.layers), n, 1000)
        exported = export_all(net, checks, log, table.export_weights)
        plans.append((net, fit, checks, len(models) - len(fit), export_s))
        models += exported + exported
    nodes, op_index = parts_of(nets, plans, models)
    ops = len(nodes.models)
    entries = list(table.entries())
    singles = [entry_model(table, e) for e in entries]
    log(
        f"measuring {len(models)} whole models of {len(nets)} networks, {ops} compiled nodes (layer kernels and the "
        f"nodes between them) and the table's {len(singles)} single-layer models again in one interleaved batch"
    )
    timed = runner.measure_many([*models, *nodes.models, *singles, *call_cost_models(), sentinel_model(1)])
    probe = timed[-1].latency_ms
    raw["op_ms"] = [m.latency_ms for m in timed[len(models) : len(models) + ops]]
    singles_timed = timed[len(models) + ops : len(models) + ops + len(singles)]
    raw["entry_ms"] = [[e.key, e.w_bits, e.a_bits, m.latency_ms] for e, m in zip(entries, singles_timed)]
    raw["call_overhead_ms"], raw["output_ms_per_byte"] = timed_call_cost([m.latency_ms for m in timed[-5:-1]])
    raw["fit_ops"], raw["check_ops"] = op_index
    raw["op_kinds"], raw["op_out_bytes"] = nodes.kinds, nodes.out_bytes
    for net, fit, checks, start, export_s in plans:
        mine = timed[start : start + len(fit)]
        t0 = time.perf_counter()
        obs = [observe(table, net, q, m.latency_ms) for q, m in zip(fit, mine)]
        fit_graph(table, [net], obs, RunOverhead("latency", 0.0, probe))
        raw["fit_s"][net.name] = export_s + sum(m.wall_s for m in mine) + time.perf_counter() - t0
        raw["probe_ms"][net.name] = probe
        raw["fit"][net.name] = [[[list(b) for b in o.bits], o.measured_ms] for o in obs]
        first = timed[start + len(fit) : start + len(fit) + len(checks)]
        second = timed[start + len(fit) + len(checks) : start + len(fit) + 2 * len(checks)]
        raw["check"][net.name] = [
            [[list(b) for b in bits_of(net.layers, q)], a.latency_ms, b.latency_ms] for q, a, b in zip(checks, first, second)
        ]
        raw["check_median"][net.name] = [[a.median_ms, b.median_ms] for a, b in zip(first, second)]
    raw["load_after"] = os.getloadavg()
    raw["machine_probe_ms"].append(probe_ms())
    return raw


def entry_parts(table: CostTable, layers: Sequence[LayerInfo], policy: QuantPolicy, op_ms: Sequence[float]) -> Parts:
    """A configuration priced by parts as before table format 11, for comparison: its layers'
    single-layer entries summed, their kernel shares summed per term domain, and the times of
    the nodes between layers ``op_ms``."""
    shares = dict.fromkeys(DOMAINS, 0.0)
    for layer, pair in zip(layers, bits_of(layers, policy)):
        shares[term_domain(pair)] += kernel_share(table.entry(layer.signature, *pair))
    return Parts(layer_sum(table, layers, policy), tuple(shares[d] for d in DOMAINS), tuple(op_ms))


def parts_of(
    nets: Sequence[Network], plans: Sequence[tuple[Network, Any, Any, int, float]], models: Sequence[bytes]
) -> tuple[NodeSet, tuple[dict[str, list[list[int]]], dict[str, list[list[int]]]]]:
    """The one-node models of every compiled node, layer kernels included, in every fit and
    checked configuration (:mod:`haq.hardware.parts`), each distinct node once, and per network
    and configuration the indices of its nodes: fit configurations, then checks."""
    nodes = NodeSet()
    fit_ops: dict[str, list[list[int]]] = {}
    check_ops: dict[str, list[list[int]]] = {}
    for net, fit, checks, start, _ in plans:
        rows = [nodes.add(b, len(net.layers), net.name) for b in models[start : start + len(fit) + len(checks)]]
        fit_ops[net.name], check_ops[net.name] = rows[: len(fit)], rows[len(fit) :]
        log(f"{net.name}: compiled {len(rows)} configurations, {len(nodes.models)} distinct nodes so far")
    return nodes, (fit_ops, check_ops)


def score(
    table: CostTable,
    nets: Sequence[Network],
    raw: dict[str, Any],
    form: str = DEFAULT_FORM,
    shared: bool = False,
    prior_weight: float = PRIOR_WEIGHT,
    own_form: str | None = OWN_FORM,
) -> dict[str, Any]:
    """(a), (b) and (c) per network from measurements :func:`measure` took, device terms in
    ``form`` (:data:`haq.hardware.graph_fit.FORMS`, or ``auto``); nothing is timed.

    Fitted as ``haq tables fit`` fits them, so each network is priced by the terms of its family
    (:func:`haq.hardware.graph_fit.fit_set`); with ``shared``, one set of terms fitted on every
    network prices all of them."""

    obs = [observe(table, net, policy_of(net.layers, bits(b)), ms) for net in nets for b, ms in raw["fit"][net.name]]
    names = {net.name for net in nets}
    probe = {name: RunOverhead("latency", 0.0, ms) for name, ms in raw["probe_ms"].items() if name in names}

    def fitted(on: Sequence[Network]) -> CostTable:
        """Device terms (and per network its own terms or correction) fitted on ``on`` only, as ``haq tables fit`` does."""
        chosen = {x.name for x in on}
        overheads = pooled([ov for name, ov in probe.items() if name in chosen])
        mine = [o for o in obs if o.network in chosen]
        return fit_graph(
            table, on, mine, overheads, form=form, log=log, by_family=not shared, prior_weight=prior_weight, own_form=own_form
        )

    kinds = raw.get("op_kinds")  # which timed nodes are layer kernels; older raw files timed only the nodes between layers
    by_parts = kinds is not None
    compiled = NodeSet(kinds=list(kinds or ()), out_bytes=raw.get("op_out_bytes") or [0] * len(kinds or ()))
    per_byte = raw.get("output_ms_per_byte", 0.0)  # timed beside the nodes; older raw files lack it (and the bytes)

    def parts(net: Network, b: tuple[tuple[int, int], ...], row: list[int]) -> Parts:
        """One configuration priced by its compiled nodes, layer kernels included, each timed alone."""
        return compiled.parts(raw["op_ms"], row)

    def by_entries(net: Network, b: tuple[tuple[int, int], ...], row: list[int]) -> Parts:
        """The same configuration priced as before format 11: layer entries and the nodes between layers."""
        between = [raw["op_ms"][i] for i in row if compiled.kinds[i] == NODE]
        return entry_parts(table, net.layers, policy_of(net.layers, b), between)

    def rows_of(price: Callable[[Network, Any, list[int]], Parts]) -> dict[str, list[tuple[Parts, float]]]:
        return {
            net.name: [(price(net, bits(b), row), ms) for (b, ms), row in zip(raw["fit"][net.name], raw["fit_ops"][net.name])]
            for net in nets
            if by_parts
        }

    fit_rows, entry_rows = rows_of(parts), rows_of(by_entries)
    joint = fitted(nets)
    result: dict[str, Any] = {"load_before": raw["load_before"], "load_after": raw["load_after"], "form": form, "networks": {}}
    for net in nets:
        lono = fitted([x for x in nets if x is not net])  # nothing of this network
        rows = raw["check"][net.name]
        checked = [bits(r[0]) for r in rows]
        first, second = [r[1] for r in rows], [r[2] for r in rows]
        medians = raw.get("check_median", {}).get(net.name)  # the same sessions, version 2's statistic; older raw files lack it
        meas = [float(np.sqrt(a * b)) for a, b in zip(first, second)]
        pa, pb = predict(lono, net, checked), predict(joint, net, checked)
        pt: list[float] = []
        if by_parts:  # no whole-model measurement of this network: priced by parts, as `tables fit --by-parts` does
            one, by_kind = fit_overhead([row for x in nets if x is not net for row in fit_rows[x.name]], per_byte)
            timed_overhead = raw["call_overhead_ms"]  # timed beside the nodes
            mine = [p for p, _ in fit_rows[net.name]]
            overhead, out_cost, _ = bounded_overhead(mine, uniform(one), per_byte)  # as the command bounds it
            _, entry_kind = fit_overhead([row for x in nets if x is not net for row in entry_rows[x.name]])
            entry_overhead, _, _ = bounded_overhead([p for p, _ in entry_rows[net.name]], entry_kind)

            def by_parts_ms(
                r: Sequence[float],
                out: float = per_byte,
                price: Callable[[Network, Any, list[int]], Parts] = parts,
                net: Network = net,
            ) -> list[float]:
                return [parts_ms(price(net, b, row), r, out) for b, row in zip(checked, raw["check_ops"][net.name])]

            synthetic = [
                observe(table, net, policy_of(net.layers, bits(b)), parts_ms(p, overhead, out_cost))
                for (b, _), (p, _) in zip(raw["fit"][net.name], fit_rows[net.name])
            ]
            others = [o for o in obs if o.network != net.name]  # measured whole beside it, as the command fits them
            overheads = pooled(list(probe.values()))
            terms = fit_graph(table, nets, others + synthetic, overheads, form=form, by_parts=[net.name], own_form=own_form)
            blended = blend_with_terms(synthetic, lono, [net])  # as `--blend-with-terms` fits
            with_blend = fit_graph(table, nets, others + blended, overheads, form=form, by_parts=[net.name], own_form=own_form)
            pt = predict(terms, net, checked)
            parts_figures = {
                "a_parts": acc_dict(accuracy(by_parts_ms(overhead, out_cost), meas)),
                "a_parts_terms": acc_dict(accuracy(pt, meas)),
                "a_parts_terms_blended": acc_dict(accuracy(predict(with_blend, net, checked), meas)),
                "a_parts_by_kind": acc_dict(accuracy(by_parts_ms(by_kind), meas)),
                "a_parts_timed_overhead": acc_dict(accuracy(by_parts_ms(uniform(timed_overhead)), meas)),
                "a_parts_entries": acc_dict(accuracy(by_parts_ms(entry_overhead, 0.0, by_entries), meas)),
                "parts_overhead_ms": overhead[0],
                "parts_by_kind_ms": dict(zip(CALL_KINDS, by_kind)),
                "parts_timed_overhead_ms": timed_overhead,
                "parts_output_ms_per_byte": per_byte,
                "parts_entries_overhead_ms": dict(zip(CALL_KINDS, entry_overhead)),
            }
        result["networks"][net.name] = {
            "bench_only": net.name in BENCH_NETS,
            "family": network_family(net.layers),
            "build_s": raw["build_s"][net.name],
            "fit_measure_s": raw["fit_s"][net.name],
            "a_leave_one_out": acc_dict(accuracy(pa, meas)),
            "b_fitted": acc_dict(accuracy(pb, meas)),
            "c_retest": acc_dict(accuracy(second, first)),
            **({"c_retest_median": acc_dict(accuracy([b for _, b in medians], [a for a, _ in medians]))} if medians else {}),
            **(parts_figures if by_parts else {}),
            "policies": [
                {"bits": [list(x) for x in bb], "measured_ms": [f, s], "a_ms": x, "b_ms": y}
                | ({"a_parts_terms_ms": pt[i]} if pt else {})
                for i, (bb, f, s, x, y) in enumerate(zip(checked, first, second, pa, pb))
            ],
        }
    g = joint.data.graph
    result["terms"] = [t.to_dict() for t in g.layer_terms]
    result["run_overhead"] = g.run_overhead.to_dict() if g.run_overhead is not None else None
    result["rules"] = [r.to_dict() for r in g.rules]
    result["families"] = [f.to_dict() for f in g.families]
    result["own_terms"] = sorted(n.network for n in g.networks)
    return result


if __name__ == "__main__":
    sys.exit(main())
