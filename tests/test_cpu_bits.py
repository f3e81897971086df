"""A CPU-like device (float and int8 only) is searchable with ``max_bits=32``; without it the
error says how to allow float."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from search_fakes import AnalyticTable

from envs.mixed_precision import MixedPrecisionEnv
from haq.core.errors import ConfigError, TableError
from haq.evaluation.config import EvalConfig
from haq.problem.config import BudgetConfig, EnvConfig
from haq.problem.problem import build_problem
from haq.quant import LayerBits, LayerInfo, LayerSignature, QuantPolicy


class Int8CpuTable(AnalyticTable):
    """Runs fp32 and W8A8 only, as onnxruntime's CPU provider does for convolutions."""

    name = "int8-cpu-test"

    def supported_bits(self, sig: LayerSignature) -> list[tuple[int, int]]:
        return [(8, 8), (32, 32)]

    def layer_cost(self, sig: LayerSignature, w_bits: int, a_bits: int, metric: str = "latency") -> float:
        if (w_bits, a_bits) not in self.supported_bits(sig):
            raise TableError(f"{self.name}: no cost at w{w_bits}/a{a_bits}")
        return sig.macs * (1.0 if w_bits == 32 else 0.4) * 1e-6


class QdqBoundaryCpuTable(Int8CpuTable):
    """The same CPU with a Quantize / Dequantize cost wherever int8 and float layers meet, as
    onnxruntime pays it: the whole-policy cost is more than the sum of the layers."""

    name = "int8-cpu-qdq-test"

    def policy_cost(self, layers: Sequence[LayerInfo], policy: QuantPolicy, metric: str = "latency") -> float:
        bits = [policy[x.name].w_bits for x in layers]
        changes = sum(a != b for a, b in zip(bits, bits[1:]))
        return super().policy_cost(layers, policy, metric) + changes * 0.1 * sum(x.macs for x in layers) * 1e-6


@pytest.mark.parametrize("table", [Int8CpuTable(), QdqBoundaryCpuTable()], ids=["additive", "qdq-boundaries"])
def test_float_range_searches_a_cpu_table(cache_dir: Path, table: Int8CpuTable) -> None:
    cfg = EnvConfig(max_bits=32, budget=BudgetConfig(ratio=0.7), evaluation=EvalConfig(kind="cheap"))
    problem = build_problem(cfg, cache_dir=cache_dir, table=table)
    env = MixedPrecisionEnv(problem=problem)
    layers = problem.workload.layers
    seen: set[tuple[int, int]] = set()
    for seed in range(12):
        env.reset(seed=seed)
        env.action_space.seed(seed)
        done = False
        while not done:
            _, _, done, _, info = env.step(env.action_space.sample())
        seen |= {(w, a) for w, a in info["policy"].values()}
        policy = QuantPolicy({n: LayerBits(w, a) for n, (w, a) in info["policy"].items()})
        assert table.policy_cost(layers, policy) <= problem.budget.target * (1 + 1e-9), info["policy"]
        assert info["metrics"]["latency_ms"] == pytest.approx(table.policy_cost(layers, policy))
    assert seen == {(8, 8), (32, 32)}
    assert problem.budget.reference == pytest.approx(sum(layer.macs for layer in problem.workload.layers) * 1e-6)
    assert np.isfinite(problem.budget.cheapest)


def test_default_range_explains_how_to_allow_float(cache_dir: Path) -> None:
    with pytest.raises(ConfigError, match="below the cheapest.*--max-bits 32"):
        build_problem(EnvConfig(evaluation=EvalConfig(kind="cheap")), cache_dir=cache_dir, table=Int8CpuTable())


@pytest.mark.parametrize(("lo", "hi"), [(2, 16), (0, 8), (9, 32), (5, 4)])
def test_bad_bit_ranges(lo: int, hi: int) -> None:
    with pytest.raises(ConfigError, match="bit range"):
        EnvConfig(min_bits=lo, max_bits=hi)
