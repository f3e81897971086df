"""Benchmark measured CPU tables: build time and prediction accuracy, naive sum vs graph-aware.

For each model: build (or extend) a measured table with the protocol and time it; then fit the
graph-aware terms on all models jointly; then draw fresh random policies per model, measure
each twice end to end and report, in the same run, how the naive per-layer sum and the
table's graph-aware ``policy_cost`` predict them (and the retest noise ceiling).

    python bench/tables.py --models digits_cnn resnet20 --n 20 --configs 12 --sessions 5
    python bench/tables.py --table latency_tables/cpu-....json --skip-build   # reuse a table (it is refitted in a copy)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from haq.hardware.build import extend_table
from haq.hardware.check import check_table
from haq.hardware.device.runner import LocalRunner
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.fit import fit_table
from haq.hardware.measured import MeasuredBackend
from haq.hardware.networks import load_network, model_layers
from haq.models import model_names
from haq.tables.table import load_table


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> int:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=model_names())
    p.add_argument("--table", default=None, help="start from this table (copied; never modified)")
    p.add_argument(
        "--skip-build", action="store_true", help="do not measure missing signatures (the table must cover the models)"
    )
    p.add_argument("--n", type=int, default=20, help="random policies checked per model")
    p.add_argument("--configs", type=int, default=12, help="configurations measured per model for the fit")
    p.add_argument("--sessions", type=int, default=5)
    ns = p.parse_args()
    protocol = ProtocolConfig(sessions=ns.sessions)
    with tempfile.TemporaryDirectory(prefix="haq-bench-") as tmp:
        path = Path(tmp) / "cpu.json"
        if ns.table:
            shutil.copy(ns.table, path)
        build_s: dict[str, float] = {}
        for m in ns.models:
            t0 = time.perf_counter()
            if not ns.skip_build:
                extend_table(
                    MeasuredBackend(protocol, log),
                    [layer.signature for layer in model_layers(m, None, None)],
                    path,
                    1,
                    models=[m],
                    log=log,
                )
            build_s[m] = time.perf_counter() - t0
        nets = [load_network(m) for m in ns.models]
        runner = LocalRunner(protocol, log)
        t0 = time.perf_counter()
        table = fit_table(load_table(path), nets, runner, ns.configs, path, log=log)
        fit_s = time.perf_counter() - t0
        print(f"protocol: {ns.sessions} sessions; fit on {ns.configs} configurations per model took {fit_s:.0f} s")
        print(
            "| model | build (s) | naive ±10 % | graph ±10 % | naive RMSPE | graph RMSPE "
            "| RMSPE ratio naive/graph | naive ρ | graph ρ | retest ±10 % |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for m, net in zip(ns.models, nets):
            r = check_table(table, net, runner, ns.n, log=log)
            ratio = r.naive.rmspe / r.graph.rmspe if r.graph.rmspe > 0 else float("inf")
            naive, graph = r.naive, r.graph
            print(
                f"| {m} | {build_s[m]:.0f} | {100 * naive.within10:.0f} % | {100 * graph.within10:.0f} % "
                f"| {100 * naive.rmspe:.1f} % | {100 * graph.rmspe:.1f} % | {ratio:.2f}x | {naive.spearman:.2f} "
                f"| {graph.spearman:.2f} | {100 * r.retest.within10:.0f} % |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
