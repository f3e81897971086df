"""Does a probe timed beside each session explain how whole-model sessions disagree on this machine?

Times the calibration probe, the drift sentinel and ``--policies`` random mixed-precision exports of
a zoo model, one fresh session each per round, interleaved, for ``--rounds`` rounds, and prints
each one's coefficient of variation over rounds and that of each model divided by each probe
timed in the same round. If the machine's speed drifted slowly, the ratios would vary much less
than the models; if they vary as much, the disagreement is faster than a round and no per-round
normalisation can remove it (then only more sessions, or a quieter machine, tighten a timing).

Then it asks how well the protocol's statistic repeats on these timings: each model's rounds are
shuffled and split into two halves, each half measured as the protocol would (sessions taken in
order until the early stop, at most ``SESSIONS``), and the two latencies compared, over
``--draws`` shuffles. Printed per model, for the protocol's rule (the second-lowest session floor,
stopping once the two lowest agree: :mod:`haq.hardware.device.measurement`) and for protocol
version 2's (the median of session medians, stopping once the 95 % t-interval of their mean is
within ``ci_rel``): how often the two halves agree within ±5 % and ±10 %, and the mean sessions
each rule took.

    python bench/session_spread.py --model resnet20 --rounds 25
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, Sequence

import numpy as np
import torch

from haq.hardware.device.machine import probe_model
from haq.hardware.device.measurement import Measurement, session_floor
from haq.hardware.device.sentinel import sentinel_model
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.timing import measure_models, settled
from haq.hardware.networks import export_all, load_network, sample_policies, supported_pairs
from haq.tables.table import load_table


def cv(values: np.ndarray) -> float:
    """Standard deviation over mean."""
    return float(values.std(ddof=1) / values.mean())


Rule = Callable[[Sequence[tuple[float, ...]], ProtocolConfig], tuple[float, int]]

T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262)
"""Two-sided 95 % Student-t quantiles for 1..9 degrees of freedom (version 2's early stop)."""


def floor_rule(sessions: Sequence[tuple[float, ...]], cfg: ProtocolConfig) -> tuple[float, int]:
    """The protocol's latency of ``sessions`` taken in order up to its early stop, and how many it took."""
    floors = [session_floor(s) for s in sessions]
    n = next((k for k in range(1, len(floors) + 1) if settled(floors[:k], cfg)), len(floors))
    return Measurement(tuple(sessions[:n]), (1,) * n, (), 0.0).latency_ms, n


def median_rule(sessions: Sequence[tuple[float, ...]], cfg: ProtocolConfig) -> tuple[float, int]:
    """Protocol version 2: the median of session medians, stopping once the 95 % t-interval of their
    mean is within ``cfg.ci_rel`` of it (after ``cfg.min_sessions``)."""
    medians = [float(np.median(s)) for s in sessions]
    n = len(medians)
    for k in range(max(cfg.min_sessions, 2), len(medians) + 1):
        arr = np.asarray(medians[:k])
        if T975[min(k - 1, len(T975)) - 1] * arr.std(ddof=1) / math.sqrt(k) / arr.mean() <= cfg.ci_rel:
            n = k
            break
    return float(np.median(medians[:n])), n


def repeatability(
    sessions: Sequence[tuple[float, ...]], rule: Rule, cfg: ProtocolConfig, draws: int, seed: int
) -> tuple[float, float, float]:
    """(share within ±5 %, share within ±10 %, mean sessions) of two measurements by ``rule`` made of
    disjoint halves of ``sessions``, over ``draws`` shuffles."""
    rng = np.random.default_rng(seed)
    half = min(len(sessions) // 2, cfg.sessions)
    gaps, used = [], []
    for _ in range(draws):
        order = rng.permutation(len(sessions))
        (a, n1), (b, n2) = (rule([sessions[i] for i in part], cfg) for part in (order[:half], order[half : 2 * half]))
        gaps.append(abs(a / b - 1.0))
        used += [n1, n2]
    g = np.asarray(gaps)
    return float(np.mean(g <= 0.05)), float(np.mean(g <= 0.10)), float(np.mean(used))


def main() -> int:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--table", default="latency_tables/example-cpu-xeon.json", help="a measured table covering the model")
    p.add_argument("--policies", type=int, default=2)
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--draws", type=int, default=200, help="shuffles of the rounds for the repeatability check")
    ns = p.parse_args()
    if ns.rounds < 4:
        p.error(f"--rounds must be at least 4 (two halves of two sessions), got {ns.rounds}")
    net = load_network(ns.model)
    table = load_table(ns.table)
    policies = sample_policies(net.layers, supported_pairs(table, net.layers), ns.policies, 0)
    models = export_all(net, policies, None, table.export_weights)
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
    protocol = ProtocolConfig()
    print(
        f"\ntwo measurements of each model from disjoint halves of its rounds "
        f"({ns.draws} shuffles, <= {protocol.sessions} sessions each):"
    )
    print("| model | rule | within ±5 % | within ±10 % | sessions |\n|---|---|---|---|---|")
    for name, m in zip(names, timed):
        for label, rule in (("floor (protocol)", floor_rule), ("median (version 2)", median_rule)):
            w5, w10, used = repeatability(m.samples_ms, rule, protocol, ns.draws, 0)
            print(f"| {name} | {label} | {100 * w5:.0f} % | {100 * w10:.0f} % | {used:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
