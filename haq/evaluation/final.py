"""The final word on one policy: a full DQ fine-tune, clean and worst-case robust accuracy on a
held-out split, its predicted cost on every metric of a device table, and — where the table
describes this machine — its latency measured here.

It scores through :func:`~haq.evaluation.held_out.held_out_evaluator` (so a policy is scored the
same way a search scored it) with longer fine-tuning, on the test split by default: the
evaluator measures on its workload's ``val`` split, so the test split is handed to it in that
role. Whether to measure is decided here (:func:`measurement_skipped`); the measurer itself is
built by the caller (``haq.commands``), which knows which machine and exporter to use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from haq.core import config as serial
from haq.core.errors import UsageError
from haq.core.types import Log, quiet
from haq.core.validate import choice, count
from haq.evaluation.config import EvalConfig
from haq.evaluation.held_out import SPLITS, Images, held_out_evaluator
from haq.evaluation.metrics import PolicyMetrics, ReferenceMetrics
from haq.hardware.device.machine import cpu_model
from haq.hardware.device.measurement import Measurement
from haq.quant import QuantPolicy, model_size_bits
from haq.tables.protocols import DeviceTable
from haq.workload import Workload

MEASURE_MODES = ("auto", "local", "never")


def _final_evaluation() -> EvalConfig:
    return EvalConfig(kind="full", finetune_epochs=3, finetune_batches=10_000, robust_samples=200, finetune_lrs=())


@dataclass(frozen=True)
class FinalEvalConfig:
    """How thoroughly to evaluate.

    split: held-out split the accuracies are measured on (``test`` or ``val``).
    samples: images of that split used (``None``: all of it).
    evaluation: the evaluator settings (``kind="full"`` fine-tunes and attacks, at ``finetune_lr``:
        ``haq evaluate`` gives it the rate chosen for the model, as a search chooses it, unless
        ``--dq-lr`` says otherwise).
    measure: ``auto`` (measure when the table describes this machine), ``local`` or ``never``.
    emulate: when measuring, export bit widths the CPU cannot run on 8-bit containers (timed
        as what really runs) instead of refusing.
    """

    split: str = "test"
    samples: int | None = None
    evaluation: EvalConfig = dataclasses.field(default_factory=_final_evaluation)
    measure: str = "auto"
    emulate: bool = False

    def __post_init__(self) -> None:
        choice("split", self.split, SPLITS)
        if self.samples is not None:
            count("samples", self.samples)
        choice("measure mode", self.measure, MEASURE_MODES)


@dataclass(frozen=True)
class FinalReport:
    """Everything ``haq evaluate`` prints.

    predicted: the table's whole-policy cost per metric (ms, mJ) and ``size_bits``.
    measured_ms / measured_noise: latency measured on this machine (the protocol's floor) and its IQR/median,
        ``None`` when not measured (``measure_note`` says why).
    """

    metrics: PolicyMetrics
    reference: ReferenceMetrics
    split: str
    samples: int
    predicted: dict[str, float]
    measured_ms: float | None
    measured_noise: float | None
    measure_note: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return serial.to_dict(self)


class LatencyMeasurer(Protocol):
    """Times the whole model under a policy (``haq.hardware.feedback.MeasuredCost`` fits)."""

    def measurement(self, policy: QuantPolicy) -> Measurement: ...


def table_describes_this_machine(table: DeviceTable) -> bool:
    """Whether the table was measured on this machine's CPU with onnxruntime."""
    meta: Any = getattr(table, "meta", {}) or {}
    runtime = str((meta.get("runtime") or {}).get("name", ""))
    device = meta.get("device") or {}
    here = cpu_model()
    named = device.get("cpu") == here or here in str(device.get("description", ""))
    return runtime.startswith("onnxruntime") and named


def measurement_skipped(cfg: FinalEvalConfig, table: DeviceTable) -> str | None:
    """Why the policy is not timed on this machine, or ``None`` when it is (callers build a measurer then)."""
    if cfg.measure == "never":
        return "not measured (--measure never)"
    if cfg.measure == "auto" and not table_describes_this_machine(table):
        return f"not measured: table '{table.name}' does not describe this machine (use --measure local to time it here anyway)"
    return None


def evaluate_final(
    workload: Workload,
    table: DeviceTable,
    policy: QuantPolicy,
    cfg: FinalEvalConfig | None = None,
    log: Log | None = None,
    measurer: LatencyMeasurer | None = None,
) -> FinalReport:
    """Fine-tune and score ``policy``, price it on ``table``, and time it with ``measurer`` where
    :func:`measurement_skipped` says to (a measurer is then required; its exporter should
    honour ``cfg.emulate``)."""
    cfg = cfg or FinalEvalConfig()
    say = log or quiet
    skipped = measurement_skipped(cfg, table)
    if skipped is None and measurer is None:
        raise UsageError(f"measure mode '{cfg.measure}' times the policy here, so evaluate_final needs a measurer")
    policy.check_layers(workload.layers)
    table.check_covers(workload.layers)
    predicted = {m: float(table.policy_cost(workload.layers, policy, m)) for m in table.metrics}
    predicted["size_bits"] = float(model_size_bits(workload.layers, policy))
    available = len(workload.data.split(cfg.split))  # type: ignore[arg-type]
    n = available if cfg.samples is None else min(cfg.samples, available)
    say(f"evaluating on {n} {cfg.split} images ({cfg.evaluation.kind} evaluator)")
    evaluator = held_out_evaluator(workload, table, cfg.evaluation, cfg.evaluation.kind, Images(cfg.split, 0, n))
    metrics = evaluator.evaluate(policy)
    measured_ms = noise = None
    note = skipped or ""
    if skipped is None and measurer is not None:
        say("measuring latency on this machine")
        m = measurer.measurement(policy)
        measured_ms, noise = m.latency_ms, m.noise
        note = "measured on this machine (the protocol's session floor)" + (", emulated bit widths" if cfg.emulate else "")
    return FinalReport(metrics, evaluator.reference, cfg.split, n, predicted, measured_ms, noise, note)


__all__ = [
    "MEASURE_MODES",
    "SPLITS",
    "FinalEvalConfig",
    "FinalReport",
    "LatencyMeasurer",
    "evaluate_final",
    "measurement_skipped",
    "table_describes_this_machine",
]
