"""What does a per-session warm-up buy? The protocol with 0.5 s per session against 0.5 s once per batch.

A session of a small model used to spend 0.5 s warming up and about 10 ms being timed. The
protocol now warms the machine once per batch (``batch_warmup_s``) and each fresh session only
for ``warmup_s`` (0.05 s) and ``warmup_runs``. This times the same models both ways, passes
alternating (A B A B ...), so drift hits both alike, and prints per kind of model (a network's
one-layer models, as ``haq tables build`` times them; whole-model policies, as ``haq tables fit``
times them): wall seconds per pass and their ratio, and how far two passes' medians disagree
(RMS relative difference after dividing out the level, in %) within each protocol and across them.
If the batch warm-up lost accuracy, "across" would exceed the old protocol's own "within".

    python bench/warmup.py [--model resnet20] [--policies 24] [--passes 2] [--sessions 5]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import numpy as np

from haq.export import supported_precisions
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.timing import measure_models
from haq.hardware.measured import export_single
from haq.hardware.networks import export_all, load_network, sample_policies


def models_of(model: str, policies: int) -> dict[str, list[bytes]]:
    """One-layer models of every (signature, precision) the CPU runs, and random whole-model policies."""
    net = load_network(model, None, None)
    sigs = {layer.signature.key(): layer.signature for layer in net.layers}
    singles = [export_single(sig, w, a)[0].onnx_bytes for sig in sigs.values() for w, a in supported_precisions(sig.op)]
    supported = [list(supported_precisions(layer.signature.op)) for layer in net.layers]
    wholes = export_all(net, sample_policies(net.layers, supported, policies, seed=0))
    return {"one-layer": singles, "whole-model": wholes}


def shape_rms(a: np.ndarray, b: np.ndarray) -> float:
    """RMS relative difference of b from a after dividing out the median ratio (the machine's level)."""
    ratio = b / a
    return float(np.sqrt(np.mean((ratio / np.median(ratio) - 1.0) ** 2)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20", help="zoo model")
    p.add_argument("--policies", type=int, default=24, help="whole-model policies")
    p.add_argument("--passes", type=int, default=2, help="passes per protocol (at least 2)")
    p.add_argument("--sessions", type=int, default=5, help="most sessions per model in both protocols")
    ns = p.parse_args()
    if ns.passes < 2 or ns.policies < 2:
        p.error("--passes and --policies must be at least 2 (agreement needs two passes, a level two models)")
    new = ProtocolConfig(sessions=ns.sessions)
    variants = {
        "per session": ProtocolConfig(sessions=ns.sessions, warmup_s=0.5, batch_warmup_s=0.0),
        "per batch": new,
    }
    kinds = models_of(ns.model, ns.policies)
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", file=sys.stderr)
    medians: dict[tuple[str, str], list[np.ndarray]] = {}
    walls: dict[tuple[str, str], list[float]] = {}
    for rnd in range(ns.passes):
        for name, cfg in variants.items():
            for kind, models in kinds.items():
                start = time.perf_counter()
                res = measure_models(models, cfg)
                walls.setdefault((name, kind), []).append(time.perf_counter() - start)
                medians.setdefault((name, kind), []).append(np.array([m.latency_ms for m in res]))
                print(f"pass {rnd + 1}/{ns.passes} {name} {kind}: {walls[(name, kind)][-1]:.1f} s", file=sys.stderr)
    print(
        f"\n{ns.model}; warm-up 0.5 s per session against {new.batch_warmup_s:g} s per batch + {new.warmup_s:g} s per "
        f"session; <= {ns.sessions} sessions; load average at end {os.getloadavg()[0]:.2f}\n"
    )
    print("| models | count | s/pass, per session | s/pass, per batch | speed-up ", end="")
    print("| within, per session | within, per batch | across |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, models in kinds.items():
        old, fast = medians[("per session", kind)], medians[("per batch", kind)]
        within_old = np.mean([shape_rms(a, b) for a, b in itertools.combinations(old, 2)])
        within_new = np.mean([shape_rms(a, b) for a, b in itertools.combinations(fast, 2)])
        across = np.mean([shape_rms(a, b) for a, b in itertools.product(old, fast)])
        t_old, t_new = np.mean(walls[("per session", kind)]), np.mean(walls[("per batch", kind)])
        print(
            f"| {kind} | {len(models)} | {t_old:.1f} | {t_new:.1f} | {t_old / t_new:.1f}x | "
            f"{within_old * 100:.1f} % | {within_new * 100:.1f} % | {across * 100:.1f} % |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
