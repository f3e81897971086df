"""What an evaluation produces: a policy's metrics and the float model's reference metrics.

Kept apart from the evaluators (which need torch and the robustness code) so the run directory,
the reward and the plots can read and write results without loading any of that.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from haq.core import config as serial
from haq.core.errors import ConfigError


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
            valid = "latency, size" + (", energy" if self.energy_mj is not None else "")
            raise ConfigError(f"metric '{metric}' is not available for this policy; use {valid}")
        return float(value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return serial.to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyMetrics:
        """Inverse of :meth:`to_dict`; other keys (an episode record's policy, reward) are ignored."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"policy metrics must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in data]
        if required:
            raise ConfigError(f"policy metrics lack {', '.join(required)}; expected the fields {', '.join(names)}")
        return serial.from_dict(cls, {n: data[n] for n in names if n in data}, "policy metrics")


@dataclass(frozen=True)
class ReferenceMetrics:
    """The float model measured the same way: the zero point of the reward's accuracy terms."""

    clean_acc: float
    robust_acc: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return serial.to_dict(self)


__all__ = ["PolicyMetrics", "ReferenceMetrics"]
