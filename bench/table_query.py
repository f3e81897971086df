"""How fast is ``CostTable.policy_cost``? The compiled query vs a naive dict-lookup loop.

The RL environment prices a policy every step, so the query must cost microseconds. Both
methods run in the same process on the same random policies, interleaved in rounds:

* naive: for each layer, build its signature key and look ``(key, w, a)`` up in a flat dict
  of every entry (what a straightforward table reader does);
* compiled: ``CostTable.policy_cost(layers, policy)``, which resolves signatures once per
  network and then indexes a dense per-layer ``[w][a]`` grid.

It checks both give the same cost, then prints µs per call and the ratio naive / compiled.

    python bench/table_query.py [--table bitfusion] [--models resnet20 mobilenetv2] [--calls 2000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Callable

import torch

import latency_tables
from haq.hardware.networks import model_layers
from haq.quant import LayerInfo, QuantPolicy
from haq.quant.policy import LayerBits


def naive_cost(index: dict[tuple[str, int, int], float], layers: list[LayerInfo], policy: QuantPolicy) -> float:
    """The baseline: one key string and one dict look-up per layer."""
    total = 0.0
    for layer in layers:
        bits = policy[layer.name]
        total += index[(layer.signature.key(), bits.w_bits, bits.a_bits)]
    return total


def per_call_us(fn: Callable[[QuantPolicy], float], policies: list[QuantPolicy]) -> float:
    """Mean µs per call over ``policies``."""
    start = time.perf_counter()
    for p in policies:
        fn(p)
    return (time.perf_counter() - start) / len(policies) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="bitfusion")
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2"])
    ap.add_argument("--calls", type=int, default=2000, help="policies priced per round and method")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    table = latency_tables.load(args.table)
    index = {(e.key, e.w_bits, e.a_bits): e.latency_ms for e in table.entries()}
    rng = random.Random(0)
    print(f"table {table.name}: {len(index)} entries; {args.calls} policies x {args.rounds} rounds per method")
    print("| model | layers | naive (µs/call) | compiled (µs/call) | naive / compiled |\n|---|---|---|---|---|")
    for model in args.models:
        layers = model_layers(model, None, None)
        pairs = table.supported_bits(layers[0].signature)
        policies = [QuantPolicy({layer.name: LayerBits(*rng.choice(pairs)) for layer in layers}) for _ in range(args.calls)]
        for p in policies[:50]:
            assert abs(naive_cost(index, layers, p) - table.policy_cost(layers, p)) < 1e-12
        naive, fast = [], []
        for _ in range(args.rounds):
            naive.append(per_call_us(lambda p, ls=layers: naive_cost(index, ls, p), policies))
            fast.append(per_call_us(lambda p, ls=layers: table.policy_cost(ls, p), policies))
        n, f = statistics.median(naive), statistics.median(fast)
        print(f"| {model} | {len(layers)} | {n:.1f} | {f:.1f} | {n / f:.1f}x |")


if __name__ == "__main__":
    main()
