"""Policy evaluation behind one interface: a :class:`QuantPolicy` in, :class:`PolicyMetrics` out.

The environment, the baselines and ``haq evaluate`` all score policies through an
:class:`Evaluator`, so a future pool of parallel workers only has to implement ``evaluate``.
Two real evaluators ship:

* :class:`CheapEvaluator` — calibrated post-training quantization, clean accuracy on the fixed
  held-out subset, cost from the table. No fine-tuning, no attacks: fast enough for tests.
* :class:`FullEvaluator` — calibration, a short Defensive-Quantization fine-tune
  (``haq.robust.dq_finetune_``), clean accuracy and worst-case robust accuracy
  (``haq.robust.robust_accuracy``, per-sample worst case over white-box and transfer attacks,
  so gradient masking cannot pass for robustness).

Both measure on the first ``val_samples`` images of the **validation** split, in eval mode, so
every policy and the float reference are compared on the same images.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from torch import nn

from haq.core.errors import ConfigError
from haq.core.types import Log
from haq.evaluation.config import EvalConfig
from haq.evaluation.ptq import quantized_copy
from haq.quant import LayerInfo, QuantPolicy, model_size_bits
from haq.tables.protocols import CostSource, DeviceTable
from haq.training import accuracy
from haq.workload import Workload


@dataclass(frozen=True)
class PolicyMetrics:
    """What one evaluated policy achieved.

    clean_acc / robust_acc: accuracies in [0, 1] on the fixed held-out subset; ``robust_acc`` is
        the per-sample worst case over attacks, ``None`` when the evaluator runs no attacks.
    latency_ms: from the table's ``policy_cost`` (or measured with hardware feedback).
    energy_mj: from the table, ``None`` when the table has no energy metric.
    size_bits: weight storage (:func:`haq.quant.model_size_bits`).
    eval_seconds: wall time of the evaluation (not part of any comparison).
    """

    clean_acc: float
    robust_acc: float | None
    latency_ms: float
    energy_mj: float | None
    size_bits: int
    eval_seconds: float = 0.0

    def cost(self, metric: str) -> float:
        """The value of a budget metric (``latency``, ``energy`` or ``size``)."""
        value = {"latency": self.latency_ms, "energy": self.energy_mj, "size": float(self.size_bits)}.get(metric)
        if value is None:
            raise ConfigError(f"metric '{metric}' is not available for this policy; use latency, size{', energy' if self.energy_mj is not None else ''}")
        return float(value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PolicyMetrics":
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: data[k] for k in ("clean_acc", "robust_acc", "latency_ms", "energy_mj", "size_bits", "eval_seconds")})


@dataclass(frozen=True)
class ReferenceMetrics:
    """The float model measured the same way: the zero point of the reward's accuracy terms."""

    clean_acc: float
    robust_acc: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class Evaluator(Protocol):
    """Scores policies of one workload on one device; ``reference`` is the float model."""

    @property
    def reference(self) -> ReferenceMetrics: ...

    def evaluate(self, policy: QuantPolicy) -> PolicyMetrics: ...


class _TableCosts:
    """Costs of a policy: latency from ``latency_source`` (table or measured), the rest from the table."""

    def __init__(self, layers: Sequence[LayerInfo], table: DeviceTable, latency_source: CostSource) -> None:
        self._layers = list(layers)
        self._table = table
        self._latency = latency_source

    def costs(self, policy: QuantPolicy) -> tuple[float, float | None, int]:
        latency = float(self._latency.policy_cost(self._layers, policy, "latency"))
        energy = float(self._table.policy_cost(self._layers, policy, "energy")) if "energy" in self._table.metrics else None
        return latency, energy, model_size_bits(self._layers, policy)


class CheapEvaluator:
    """Calibrated post-training quantization: clean accuracy only (real, but no fine-tune or attacks)."""

    def __init__(self, workload: Workload, table: DeviceTable, cfg: EvalConfig, latency_source: CostSource | None = None) -> None:
        self._wl = workload
        self._cfg = cfg
        self._costs = _TableCosts(workload.layers, table, table if latency_source is None else latency_source)
        self._x, self._y = workload.data.subset("val", cfg.val_samples)
        self._reference = ReferenceMetrics(accuracy(workload.model, self._x, self._y, workload.device), None)

    @property
    def reference(self) -> ReferenceMetrics:
        return self._reference

    def evaluate(self, policy: QuantPolicy) -> PolicyMetrics:
        start = time.perf_counter()
        policy.check_layers(self._wl.layers)
        q = quantized_copy(self._wl.model, policy, self._wl.data, self._wl.device, self._cfg.calib_batches, self._cfg.batch_size)
        acc = accuracy(q, self._x, self._y, self._wl.device)
        latency, energy, size = self._costs.costs(policy)
        return PolicyMetrics(acc, None, latency, energy, size, time.perf_counter() - start)


class FullEvaluator:
    """Calibrate, DQ fine-tune, then clean and worst-case robust accuracy (HAQ + Defensive Quantization)."""

    def __init__(self, workload: Workload, table: DeviceTable, cfg: EvalConfig, latency_source: CostSource | None = None) -> None:
        from haq import robust

        self._robust = robust
        self._wl = workload
        self._cfg = cfg
        self._costs = _TableCosts(workload.layers, table, table if latency_source is None else latency_source)
        self._x, self._y = workload.data.subset("val", cfg.val_samples)
        self._xr, self._yr = self._x[: cfg.robust_samples], self._y[: cfg.robust_samples]
        self._attack = robust.AttackConfig(eps=cfg.attack_eps, pgd_steps=cfg.attack_steps, seed=workload.config.seed)
        self._dq = robust.DQConfig(
            beta=cfg.dq_beta, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, batch_size=cfg.batch_size,
            max_batches=cfg.finetune_batches, seed=workload.config.seed,
        )
        self._reference = ReferenceMetrics(
            accuracy(workload.model, self._x, self._y, workload.device), self._worst_case(workload.model),
        )

    @property
    def reference(self) -> ReferenceMetrics:
        return self._reference

    def _worst_case(self, model: nn.Module) -> float:
        report = self._robust.robust_accuracy(
            model, self._xr, self._yr, self._cfg.attacks, self._attack, self._wl.device,
            self._wl.data.value_range, source_model=self._wl.model,
        )
        return float(report.worst_case)

    def evaluate(self, policy: QuantPolicy) -> PolicyMetrics:
        start = time.perf_counter()
        policy.check_layers(self._wl.layers)
        q = quantized_copy(self._wl.model, policy, self._wl.data, self._wl.device, self._cfg.calib_batches, self._cfg.batch_size)
        if self._cfg.finetune_epochs > 0:
            self._robust.dq_finetune_(q, self._wl.data, self._dq, self._wl.device)
        acc = accuracy(q, self._x, self._y, self._wl.device)
        robust_acc = self._worst_case(q)
        latency, energy, size = self._costs.costs(policy)
        return PolicyMetrics(acc, robust_acc, latency, energy, size, time.perf_counter() - start)


def policy_key(policy: QuantPolicy) -> tuple[tuple[str, int, int], ...]:
    """Hashable identity of a policy's bits (metadata ignored)."""
    return tuple((n, b.w_bits, b.a_bits) for n, b in sorted(policy.layers.items()))


class CachedEvaluator:
    """Memoizes another evaluator: a policy seen before is not fine-tuned or attacked again."""

    def __init__(self, inner: Evaluator) -> None:
        self._inner = inner
        self._cache: dict[tuple[tuple[str, int, int], ...], PolicyMetrics] = {}
        self.hits = 0

    @property
    def reference(self) -> ReferenceMetrics:
        return self._inner.reference

    def __contains__(self, policy: QuantPolicy) -> bool:
        return policy_key(policy) in self._cache

    def remember(self, policy: QuantPolicy, metrics: PolicyMetrics) -> None:
        """Pre-load a known result (a resumed run re-reads its episodes)."""
        self._cache[policy_key(policy)] = metrics

    def evaluate(self, policy: QuantPolicy) -> PolicyMetrics:
        key = policy_key(policy)
        if key in self._cache:
            self.hits += 1
            return self._cache[key]
        metrics = self._inner.evaluate(policy)
        self._cache[key] = metrics
        return metrics


def make_evaluator(
    workload: Workload, table: DeviceTable, cfg: EvalConfig,
    feedback_cache: Path | None = None, log: Log | None = None,
) -> CachedEvaluator:
    """The configured evaluator, cached.

    With ``hardware_feedback`` the latency is measured on this machine (the whole model under
    the policy exported to QDQ ONNX and timed with haq's protocol; bit widths the CPU cannot
    run are exported emulated, so the time is what the CPU really executes); measurements are
    kept in ``feedback_cache`` so a resumed run does not re-measure.
    """
    latency_source: CostSource = table
    if cfg.hardware_feedback:
        runtime = table.meta.get("runtime", {})
        if not (isinstance(runtime, Mapping) and runtime.get("name") == "onnxruntime"):
            raise ConfigError(
                f"--hardware-feedback measures this machine with onnxruntime, but table '{table.name}' prices another "
                "device, so budget and measured latency would be in different units; use this machine's measured table"
            )
        from haq.hardware.device.runner import LocalRunner
        from haq.hardware.feedback import MeasuredCost, QDQExporter

        latency_source = MeasuredCost(workload, LocalRunner(), QDQExporter(emulated=True), feedback_cache, log)
    cls = FullEvaluator if cfg.kind == "full" else CheapEvaluator
    return CachedEvaluator(cls(workload, table, cfg, latency_source))


__all__ = [
    "CachedEvaluator",
    "CheapEvaluator",
    "Evaluator",
    "FullEvaluator",
    "PolicyMetrics",
    "ReferenceMetrics",
    "make_evaluator",
    "policy_key",
]
