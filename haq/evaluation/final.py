"""The final word on one policy: a full DQ fine-tune, clean and worst-case robust accuracy on a
held-out split, its predicted cost on every metric of a device table, and — where the table
describes this machine — its latency measured here.

It reuses the search's :class:`~haq.evaluation.evaluators.FullEvaluator` (so a policy is scored the
same way a search scored it) with longer fine-tuning, on the test split by default: the
evaluator measures on its workload's ``val`` split, so the test split is handed to it in that
role. Measurement exports the policy to QDQ ONNX (:mod:`haq.export`) and times it with the
measurement protocol (:mod:`haq.hardware.device.runner`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from haq.core.errors import ConfigError
from haq.core.types import Log
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import (
    CheapEvaluator,
    FullEvaluator,
    PolicyMetrics,
    ReferenceMetrics,
)
from haq.quant import QuantPolicy, model_size_bits
from haq.tables.protocols import DeviceTable
from haq.workload import Workload

if TYPE_CHECKING:
    from haq.hardware.device.runner import Runner

SPLITS = ("test", "val")
MEASURE_MODES = ("auto", "local", "never")


@dataclass(frozen=True)
class FinalEvalConfig:
    """How thoroughly to evaluate.

    split: held-out split the accuracies are measured on (``test`` or ``val``).
    samples: images of that split used (``None``: all of it).
    evaluation: the evaluator settings (``kind="full"`` fine-tunes and attacks).
    measure: ``auto`` (measure when the table describes this machine), ``local`` or ``never``.
    emulate: when measuring, export bit widths the CPU cannot run on 8-bit containers (timed
        as what really runs) instead of refusing.
    """

    split: str = "test"
    samples: int | None = None
    evaluation: EvalConfig = dataclasses.field(
        default_factory=lambda: EvalConfig(kind="full", finetune_epochs=3, finetune_batches=10_000, robust_samples=200)
    )
    measure: str = "auto"
    emulate: bool = False

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"unknown split '{self.split}'; choose one of {', '.join(SPLITS)}")
        if self.samples is not None and (isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1):
            raise ConfigError(f"samples must be an integer >= 1 (or omitted for the whole split), got {self.samples!r}")
        if self.measure not in MEASURE_MODES:
            raise ConfigError(f"unknown measure mode '{self.measure}'; choose one of {', '.join(MEASURE_MODES)}")


@dataclass(frozen=True)
class FinalReport:
    """Everything ``haq evaluate`` prints.

    predicted: the table's whole-policy cost per metric (ms, mJ) and ``size_bits``.
    measured_ms / measured_noise: median latency measured on this machine and its IQR/median,
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
        return dataclasses.asdict(self)


def table_describes_this_machine(table: DeviceTable) -> bool:
    """Whether the table was measured on this machine's CPU with onnxruntime."""
    from haq.hardware.device.protocol import cpu_model

    meta: Any = getattr(table, "meta", {}) or {}
    runtime = str((meta.get("runtime") or {}).get("name", ""))
    device = meta.get("device") or {}
    here = cpu_model()
    named = device.get("cpu") == here or here in str(device.get("description", ""))
    return runtime.startswith("onnxruntime") and named


def evaluate_final(
    workload: Workload, table: DeviceTable, policy: QuantPolicy, cfg: FinalEvalConfig = FinalEvalConfig(),
    log: Log | None = None, runner: Runner | None = None,
) -> FinalReport:
    """Fine-tune and score ``policy``, price it on ``table``, measure it where that is this machine
    (with ``runner``, default a :class:`~haq.hardware.device.runner.LocalRunner` with the standard protocol)."""
    say = log or (lambda _msg: None)
    policy.check_layers(workload.layers)
    table.check_covers(workload.layers)
    predicted = {m: float(table.policy_cost(workload.layers, policy, m)) for m in table.metrics}
    predicted["size_bits"] = float(model_size_bits(workload.layers, policy))
    held_out = workload.data.test if cfg.split == "test" else workload.data.val
    n = len(held_out) if cfg.samples is None else min(cfg.samples, len(held_out))
    data = dataclasses.replace(workload.data, val=held_out)
    ev_cfg = dataclasses.replace(cfg.evaluation, val_samples=n, robust_samples=min(cfg.evaluation.robust_samples, n))
    scoped = dataclasses.replace(workload, data=data)
    say(f"evaluating on {n} {cfg.split} images ({ev_cfg.kind} evaluator)")
    evaluator = FullEvaluator(scoped, table, ev_cfg) if ev_cfg.kind == "full" else CheapEvaluator(scoped, table, ev_cfg)
    metrics = evaluator.evaluate(policy)
    measured_ms = noise = None
    if cfg.measure == "never":
        note = "not measured (--measure never)"
    elif cfg.measure == "auto" and not table_describes_this_machine(table):
        note = f"not measured: table '{table.name}' does not describe this machine (use --measure local to time it here anyway)"
    else:
        from haq.hardware.device.runner import LocalRunner
        from haq.hardware.feedback import MeasuredCost, QDQExporter

        say("measuring latency on this machine")
        m = MeasuredCost(workload, runner or LocalRunner(), QDQExporter(emulated=cfg.emulate), log=say).measurement(policy)
        measured_ms, noise = m.median_ms, m.noise
        note = "measured on this machine (median of the protocol's sessions)" + (", emulated bit widths" if cfg.emulate else "")
    return FinalReport(metrics, evaluator.reference, cfg.split, n, predicted, measured_ms, noise, note)
