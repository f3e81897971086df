"""``haq tables``: build, list and inspect device cost tables.

``build`` prices a model's layers on a device and adds them to a table file (only signatures the
table lacks); ``list`` shows the shipped tables; ``show`` prints a table's metadata, a few
entries and, with ``--model``, the model's per-layer and whole-network cost range. Further
``haq tables`` actions live in their own modules, named in ``EXTRA_ACTIONS``; each has
``register(actions)`` like a top-level command.
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import latency_tables
from haq.commands.device import (
    add_protocol_args,
    add_tls_ca_arg,
    add_token_arg,
    protocol_config,
    remote_access,
)
from haq.commands.workload_args import add_data_args
from haq.core.errors import ConfigError
from haq.core.types import stderr_log as log
from haq.hardware.build import LOCAL_DEVICES, BuildConfig, build_table
from haq.hardware.device.machine import MachineFingerprint
from haq.hardware.parts import describe_overhead
from haq.jobs.execute import Resolver, table_backend
from haq.jobs.flags import add_job_args, resolve_job
from haq.quant import QuantPolicy
from haq.tables.network import describe_pairs
from haq.tables.schema import KERNELS, SIGNED_WEIGHTS, UNSIGNED_WEIGHTS, PartsCall
from haq.tables.table import CostTable
from haq.workload import WorkloadConfig, workload_layers

EXTRA_ACTIONS: tuple[str, ...] = ("tables_check", "tables_fit")


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    p = sub.add_parser("tables", help="build, list and inspect device cost tables")
    actions = p.add_subparsers(dest="tables_action", metavar="ACTION")
    actions.required = True

    b = actions.add_parser("build", help="price a model's layers on a device and add them to a table")
    b.add_argument("--model", nargs="+", default=None, help="zoo names or package.module:callable (several allowed)")
    add_data_args(b, "input shape source (default: each model's own dataset)")
    b.add_argument("--device", default=None, help=f"{', '.join(LOCAL_DEVICES)} or remote://HOST:PORT")
    b.add_argument("--out", default=None, help="table file to create or extend (default: ./<device>.json)")
    b.add_argument("--batch", type=int, default=1, help="batch size the layers are priced at (default 1)")
    b.add_argument(
        "--int8-weights",
        dest="weights",
        action="store_const",
        const=SIGNED_WEIGHTS,
        default=UNSIGNED_WEIGHTS,
        help="time 8-bit layers with int8 weights, as `haq export --int8-weights` stores them (a CPU with VNNI or AMX); "
        "by default uint8 at zero point 128, as `haq export` does",
    )
    add_token_arg(b)
    add_tls_ca_arg(b)
    add_protocol_args(b)
    b.set_defaults(func=run_build)
    add_job_args(b, mlflow=False)

    ls = actions.add_parser("list", help="the shipped tables")
    ls.set_defaults(func=run_list)

    s = actions.add_parser("show", help="metadata, a few entries and optionally a model's cost range")
    s.add_argument("table", help="shipped table name or table file")
    s.add_argument("--entries", type=int, default=5, help="how many entries to print (default 5)")
    s.add_argument("--model", default=None, help="also print this model's per-layer costs and range")
    add_data_args(s, "input shape source for --model")
    s.set_defaults(func=run_show)

    for name in EXTRA_ACTIONS:
        importlib.import_module(f"haq.commands.{name}").register(actions)


def run_build(ns: argparse.Namespace) -> int:
    ns, job = resolve_job(
        ns,
        "table_build",
        lambda n: {
            "build": BuildConfig(
                tuple(n.model),
                n.device,
                Path(n.out) if n.out else Path(f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', n.device)}.json"),
                n.batch,
                n.dataset,
                n.data_root,
                n.input_size,
                n.input_shape,
                n.weights,
            ),
            "protocol": protocol_config(n),
        },
        required={"model": "--model", "device": "--device"},
    )
    cfg = job.section("build")
    if cfg.device == "cpu" and ns.token:
        raise ConfigError("--token is for remote://HOST:PORT devices; --device cpu times this machine")
    resolver = Resolver(device=lambda spec: (spec, remote_access(ns)))
    protocol = job.section("protocol")
    report = build_table(cfg, lambda: table_backend(cfg.device, protocol, resolver, log, "--device", cfg.weights), log)
    print(f"{report.path}: priced {report.added} new signature(s), kept {report.kept} already present; {report.entries} entries")
    return 0


def run_list(ns: argparse.Namespace) -> int:
    names = latency_tables.available()
    if not names:
        print("no shipped tables")
        return 0
    print("| table | device | metrics | signatures | entries | sources | models |\n|---|---|---|---|---|---|---|")
    for name in names:
        t = latency_tables.load(name)
        print(
            f"| {name} | {t.device} | {', '.join(t.metrics)} | {len(t.signatures)} | {sum(1 for _ in t.entries())} "
            f"| {', '.join(t.sources())} | {', '.join(t.meta.get('models', []))} |"
        )
    return 0


def run_show(ns: argparse.Namespace) -> int:
    if ns.entries < 0:
        raise ConfigError(f"--entries must be >= 0, got {ns.entries}")
    t = latency_tables.load(ns.table)
    _print_meta(t)
    for e in list(t.entries())[: ns.entries]:
        energy = f", {e.energy_mj:.4g} mJ" if e.energy_mj is not None else ""
        print(f"  {e.key} w{e.w_bits}/a{e.a_bits}: {e.latency_ms:.4g} ms{energy} [{e.source}; {e.kernel}]")
    if ns.model:
        _print_model(
            t,
            WorkloadConfig(
                model=ns.model, dataset=ns.dataset, data_root=ns.data_root, input_size=ns.input_size, input_shape=ns.input_shape
            ),
        )
    return 0


def _print_meta(t: CostTable) -> None:
    m = t.meta
    print(f"table {t.name} ({t.path})")
    print(f"  device: {m['device']['name']} - {m['device']['description']}")
    print(f"  runtime: {m['runtime']['name']} {m['runtime']['version']}; threads: {m['threads']}; batch: {m['batch']}")
    if t.weight_container is not None:
        print(
            f"  8-bit weights timed as {t.weight_container} (haq export stores them so in a policy a run priced by "
            f"this table wrote; --weights {t.weight_container} for any other)"
        )
    metrics = ", ".join(f"{k} ({m['units'][k]})" for k in t.metrics)
    print(f"  metrics: {metrics}; sources: {', '.join(t.sources())}")
    print(f"  created: {m['created']}{'; updated: ' + m['updated'] if 'updated' in m else ''}; tool: haq {m['tool']['version']}")
    models = ", ".join(m.get("models", [])) or "-"
    print(f"  models: {models}; {len(t.signatures)} signatures, {sum(1 for _ in t.entries())} entries")
    inputs = "; ".join(
        f"{model} {', '.join('x'.join(map(str, s)) for s in shapes)}" for model, shapes in m.get("inputs", {}).items()
    )
    print(f"  inputs: {inputs or 'not recorded'}")
    print(f"  protocol: {m['protocol']}")
    print(f"  machine: {_describe_machine(m.get('machine'))}")
    for name, c in m["constants"].items():
        print(f"  constant {name} = {c['value']:g} {c['unit']} ({c['source']})")
    if t.data.graph:
        g = t.data.graph
        print(
            f"  graph extras: {len(g.transitions)} transitions, {len(g.rules)} rules, {len(g.layer_terms)} device layer terms, "
            f"{len(g.corrections)} corrections"
            + "".join(
                f"; {f.family} networks' own terms ({len(f.rules)} rules, {len(f.layer_terms)} layer terms, "
                f"fitted on {', '.join(sorted({n for t in f.layer_terms for n in t.networks})) or '-'})"
                for f in g.families
            )
            + "".join(
                f"; {n.network}'s own terms ({n.fitted_on} configurations{', priced by parts' if n.priced_by == 'parts' else ''})"
                for n in g.networks
            )
            + (
                f"; call overhead by parts {_call_overhead(g.parts_call)} "
                f"(fitted on {g.parts_call.measurements} whole-model measurements of {', '.join(g.parts_call.fitted_on)})"
                if g.parts_call is not None
                else ""
            )
        )


def _call_overhead(call: PartsCall) -> str:
    """A kept call overhead: per kind where the fit found one per kind, else the one for all calls,
    and what the parts priced layers by."""
    if call.layers == KERNELS:
        per_kib = f"{1024e6 * call.per_byte_ms:.1f} ns per KiB of output"
        return f"{1000 * call.latency_ms:.2f} µs and {per_kib}, layers by their kernels"
    if call.by_kind is None:
        return f"{1000 * call.latency_ms:.2f} µs, layers by their {call.layers}"
    return f"(µs) {describe_overhead(call.by_kind)}, layers by their {call.layers}"


def _describe_machine(record: object) -> str:
    """One line for ``meta.machine``: what measured the table, or why nothing is recorded."""
    if not isinstance(record, dict):
        return "not recorded (analytical, or measured by a haq older than machine fingerprints)"
    fp = MachineFingerprint.from_dict(record)
    probe = f", probe {fp.probe_ms:.3g} ms" if fp.probe_ms else ""
    where = "a haq device agent" if record.get("remote") else "the building host"
    return (
        f"{record['identity']} ({fp.cpu}, family/model/stepping {fp.family}/{fp.model}/{fp.stepping}, "
        f"{fp.logical_cores} logical cores, onnxruntime {fp.onnxruntime}{probe}; timed on {where})"
    )


def _print_model(t: CostTable, wcfg: WorkloadConfig) -> None:
    model = wcfg.model
    layers = workload_layers(wcfg)
    t.check_covers(layers)
    net = t.compile(layers)
    for metric in t.metrics:
        unit = t.meta["units"][metric]
        print(f"\n{model} on {t.name}, {metric} ({unit}):")
        print("| layer | signature | supported | cheapest | dearest |\n|---|---|---|---|---|")
        for i, layer in enumerate(layers):
            costs = net.layer_costs(i, metric)
            print(
                f"| {layer.name} | {layer.signature.key()} | {describe_pairs(sorted(costs))} "
                f"| {min(costs.values()):.4g} | {max(costs.values()):.4g} |"
            )
        lo, hi = net.cost_range(metric)
        line = f"network: cheapest {lo:.4g}, dearest {hi:.4g}"
        if all((8, 8) in net.layer_costs(i, metric) for i in range(len(layers))):
            line += f", uniform 8/8 {net.policy_cost(QuantPolicy.uniform(net.names, 8), metric):.4g}"
        print(line + f" {unit}")
