"""A small analytical device table for search tests: costs follow Bit Fusion's shape (compute
∝ MACs·w·a, memory ∝ weights·w) without reading any file, so tests can subclass it to add
precision-boundary costs or restrict the supported pairs."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from haq.core.errors import TableError
from haq.quant import LayerInfo, LayerSignature, QuantPolicy

PAIRS = [(w, a) for w in range(2, 9) for a in range(2, 9)]


class AnalyticTable:
    """Implements the search's DeviceTable protocol for every layer signature, bits 2..8."""

    name = "analytic-test"
    meta: Mapping[str, Any] = {"device": {"name": "analytic-test"}, "runtime": {"name": "formula"}}
    metrics: tuple[str, ...] = ("latency", "energy")

    def supported_bits(self, sig: LayerSignature) -> list[tuple[int, int]]:
        return list(PAIRS)

    def layer_cost(self, sig: LayerSignature, w_bits: int, a_bits: int, metric: str = "latency") -> float:
        if (w_bits, a_bits) not in self.supported_bits(sig):
            raise TableError(f"{self.name}: no cost at w{w_bits}/a{a_bits}")
        compute = sig.macs * w_bits * a_bits / 64.0
        memory = sig.params * w_bits / 8.0 + sig.input_elems * a_bits / 8.0
        scale = 1e-6 if metric == "latency" else 2e-6
        return scale * max(compute, memory)

    def policy_cost(self, layers: Sequence[LayerInfo], policy: QuantPolicy, metric: str = "latency") -> float:
        return sum(self.layer_cost(x.signature, policy[x.name].w_bits, policy[x.name].a_bits, metric) for x in layers)

    def check_covers(self, layers: Sequence[LayerInfo]) -> None:
        if not layers:
            raise TableError("no layers")
