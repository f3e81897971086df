"""``haq cost``: what one or more policies cost on every shipped device (the HAQ cross-device table)."""

from __future__ import annotations

import argparse
from typing import Sequence

from haq.commands.workload_args import add_workload_args, uncovered_layer_error, workload_config
from haq.quant import LayerInfo
from haq.tables.compare import DeviceCost


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    from haq.commands.problems import add_strict_arg

    p = sub.add_parser("cost", help="a policy's latency / energy on every shipped device table (policy tuned for X, run on Y)")
    add_workload_args(p)
    p.add_argument("--policy", required=True, nargs="+", help="policy JSON file(s), e.g. RUN_DIR/best_policy.json; one row each")
    p.add_argument(
        "--device",
        nargs="+",
        default=None,
        help="device tables to cost on (default: every shipped table); cpu is this machine's (built on first use)",
    )
    add_strict_arg(p)
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from haq.core.types import stderr_log as log
    from haq.jobs.problems import load_device_tables
    from haq.quant import QuantPolicy
    from haq.tables.compare import cost_on_devices

    layers = model_layers(ns)
    tables = load_device_tables(ns.device, workload_config(ns), strict=ns.strict, log=log)
    rows = [(path, cost_on_devices(layers, QuantPolicy.load(path), tables)) for path in ns.policy]
    print(f"cost of each policy on {ns.model}, per device (latency in the table's ms; x = speed-up over uniform 8-bit there)")
    print(format_device_costs(rows))
    fixes = [e for e in (uncovered_layer_error(workload_config(ns), t) for t in tables) if e is not None]
    for fix in fixes:
        print(f"\n{fix}")
    return 0


def model_layers(ns: argparse.Namespace) -> list[LayerInfo]:
    """The model's quantizable layers at its resolved input; costing needs only shapes, so nothing is trained."""
    from haq.workload import workload_layers

    return workload_layers(workload_config(ns))


def format_device_costs(rows: Sequence[tuple[str, list[DeviceCost]]]) -> str:
    """A Markdown table: one row per policy, one column per device, and the notes below it."""
    if not rows:
        return ""
    names = [c.table for c in rows[0][1]]
    lines = ["| policy | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    notes: dict[str, str] = {}
    for label, costs in rows:
        cells = []
        for c in costs:
            if c.latency_ms is None:
                cells.append("n/a")
                notes.setdefault(c.table, c.note)
                continue
            energy = f", {c.energy_mj:.4g} mJ" if c.energy_mj is not None else ""
            speed = f" ({c.speedup_vs_uniform:.2f}x)" if c.speedup_vs_uniform is not None else ""
            promoted = f" [{len(c.promoted)} layers promoted]" if c.promoted else ""
            cells.append(f"{c.latency_ms:.4g} ms{energy}{speed}{promoted}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for table, note in notes.items():
        lines.append(f"\n{table}: {note}")
    if any(c.promoted for _, costs in rows for c in costs):
        lines.append("\npromoted: the device does not run those layers' bit widths; costed at the narrowest wider pair it runs")
    return "\n".join(lines)


__all__ = ["format_device_costs", "model_layers", "register", "run"]
