"""Does a probe timed beside each session explain how whole-model sessions disagree on this machine?

Times the calibration probe, the drift sentinel and ``--policies`` random mixed-precision exports of
a zoo model, one fresh session each per round, interleaved, for ``--rounds`` rounds, and prints
each one's coefficient of variation over rounds and that of each model divided by each probe
timed in the same round. If the machine's speed drifted slowly, the ratios would vary much less
than the models; if they vary as much, the disagreement is faster than a round and no per-round
normalisation can remove it (then only more sessions, or a quieter machine, tighten a timing).

    python bench/session_spread.py --model resnet20 --rounds 25
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from haq.hardware.device.machine import probe_model
from haq.hardware.device.sentinel import sentinel_model
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.timing import measure_models
from haq.hardware.networks import export_all, load_network, sample_policies, supported_pairs
from haq.tables.table import load_table


def cv(values: np.ndarray) -> float:
    """Standard deviation over mean."""
    return float(values.std(ddof=1) / values.mean())


def main() -> int:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--table", default="latency_tables/example-cpu-xeon.json", help="a measured table covering the model")
    p.add_argument("--policies", type=int, default=2)
    p.add_argument("--rounds", type=int, default=25)
    ns = p.parse_args()
    net = load_network(ns.model)
    table = load_table(ns.table)
    models = export_all(net, sample_policies(net.layers, supported_pairs(table, net.layers), ns.policies, 0), None)
    names = ["probe", "sentinel", *(f"{ns.model}-{i}" for i in range(len(models)))]
    cfg = ProtocolConfig(threads=1, sessions=ns.rounds, ci_rel=0.0, max_retries=0)
    timed = measure_models([probe_model(), sentinel_model(256), *models], cfg)
    rounds = {name: np.asarray(m.session_medians) for name, m in zip(names, timed)}
    print(f"{ns.rounds} rounds, one fresh session per model per round; coefficient of variation over rounds:")
    for name, values in rounds.items():
        print(f"  {name}: {100 * cv(values):.1f} % (mean {values.mean():.4f} ms)")
    for name in names[2:]:
        ratios = ", ".join(f"÷ {probe} {100 * cv(rounds[name] / rounds[probe]):.1f} %" for probe in names[:2])
        print(f"  {name} {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
