"""Fakes for search tests: a small analytical device table (costs follow Bit Fusion's shape:
compute ∝ MACs·w·a, memory ∝ weights·w) that tests can subclass to add precision-boundary costs
or restrict the supported pairs, and an evaluator whose accuracy is a line in the bits."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from haq.core.errors import TableError
from haq.evaluation.metrics import PolicyMetrics, ReferenceMetrics
from haq.quant import LayerInfo, LayerSignature, QuantPolicy

PAIRS = [(w, a) for w in range(2, 9) for a in range(2, 9)]


class AnalyticTable:
    """Implements the search's DeviceTable protocol for every layer signature, bits 2..8."""

    name = "analytic-test"
    meta: Mapping[str, Any] = {"device": {"name": "analytic-test"}, "runtime": {"name": "formula"}}
    metrics: tuple[str, ...] = ("latency", "energy")
    weight_container: str | None = None
    export_weights = "uint8"

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


class FakeEvaluator:
    """A fake evaluator: accuracy from the bits (:meth:`accuracy`: the sum of all widths / 100),
    every batch it is given recorded."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    @property
    def calls(self) -> int:
        """Policies evaluated so far."""
        return sum(self.batches)

    @property
    def reference(self) -> ReferenceMetrics:
        return ReferenceMetrics(1.0, None)

    def evaluate(self, policy: QuantPolicy) -> PolicyMetrics:
        return self.evaluate_many([policy])[0]

    def evaluate_many(self, policies: Sequence[QuantPolicy]) -> list[PolicyMetrics]:
        self.batches.append(len(policies))
        return [PolicyMetrics(self.accuracy(p), None, 1.0, None, 8) for p in policies]

    def accuracy(self, policy: QuantPolicy) -> float:
        return sum(b.w_bits + b.a_bits for b in policy.layers.values()) / 100.0


class LinearEvaluator(FakeEvaluator):
    """A fake evaluator whose accuracy is a line in layer ``a``'s weight bits."""

    def __init__(self, slope: float, offset: float) -> None:
        super().__init__()
        self.slope, self.offset = slope, offset

    def accuracy(self, policy: QuantPolicy) -> float:
        return self.offset + self.slope * policy["a"].w_bits
