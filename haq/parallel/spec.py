"""What a worker needs to evaluate policies exactly as the driver would: the workload's config and
float weights, the device table, the evaluator settings and the torch device.

The float weights travel as ``torch.save`` bytes and are read back with ``weights_only`` loading
(:func:`haq.models.load_checkpoint_` through the workload's ``checkpoint``), so a worker never
retrains the model (a remote node has no model cache) and never unpickles anything but tensors.
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from haq.core.validate import count
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import QuantizingEvaluator, build_evaluator
from haq.tables.protocols import DeviceTable
from haq.training import parse_torch_device
from haq.workload import Workload, WorkloadConfig, load_workload


@dataclass(frozen=True)
class WorkerSpec:
    """Everything one worker rebuilds its evaluators from.

    workload: the driver's workload config (dataset, seed, model name).
    weights: the trained float model's state dict as ``torch.save`` bytes.
    table: the device table that prices every policy.
    evaluation: the evaluator settings; ``kinds`` are built from it (``cheap`` / ``full``).
    kinds: the evaluator kinds the worker serves.
    torch_device: where the worker evaluates (``cpu``, ``cuda:0``).
    threads: torch threads per worker (1: workers, not threads, use the cores).
    """

    workload: WorkloadConfig
    weights: bytes
    table: DeviceTable
    evaluation: EvalConfig
    kinds: tuple[str, ...]
    torch_device: str = "cpu"
    threads: int = 1

    def __post_init__(self) -> None:
        count("threads", self.threads)
        for kind in self.kinds:
            EvalConfig(kind=kind)  # validates the kind name


def worker_spec(
    workload: Workload,
    table: DeviceTable,
    evaluation: EvalConfig,
    kinds: tuple[str, ...],
    torch_device: str,
    threads: int = 1,
) -> WorkerSpec:
    """The spec of a loaded workload: its float weights serialized once for every worker."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in workload.model.state_dict().items()}, buf)
    return WorkerSpec(workload.config, buf.getvalue(), table, evaluation, tuple(kinds), torch_device, threads)


def load_worker_workload(spec: WorkerSpec) -> Workload:
    """The driver's workload, rebuilt from the spec's weights (written to a temporary checkpoint)."""
    with tempfile.TemporaryDirectory(prefix="haq-worker-") as tmp:
        path = Path(tmp) / "float.pt"
        path.write_bytes(spec.weights)
        loaded = load_workload(dataclasses.replace(spec.workload, checkpoint=str(path)), parse_torch_device(spec.torch_device))
    return dataclasses.replace(loaded, config=spec.workload)


def worker_workload(spec: WorkerSpec) -> Workload:
    """The rebuilt workload, with ``spec.threads`` torch threads for everything this process evaluates."""
    torch.set_num_threads(spec.threads)
    return load_worker_workload(spec)


def worker_evaluators(spec: WorkerSpec, workload: Workload) -> dict[str, QuantizingEvaluator]:
    """One evaluator per kind in the spec, on the rebuilt ``workload``."""
    return {kind: build_evaluator(workload, spec.table, dataclasses.replace(spec.evaluation, kind=kind)) for kind in spec.kinds}
