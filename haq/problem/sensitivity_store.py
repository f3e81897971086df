"""Sensitivity estimates kept between runs, by what determines them.

A measured estimate costs minutes on a deep model (ResNet-20: 1.5 to 3 on one core), and every
greedy or ILP baseline, every objective agent and every resume of one on the same model asks for
the same figures again. The estimate is a deterministic function of the float model, the
training images it uses, the reward's weights and attack, and its settings, so a digest of
exactly those names it: an equal digest is the same estimate, and anything that changes the
figures (other weights, other images, another attack seed, another torch or haq) changes it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Protocol

import torch
from torch import nn

from haq.core import config as serial
from haq.models.cache import software_versions
from haq.problem.sensitivity import Sensitivity, SensitivityConfig
from haq.workload import Workload

KEY_FORMAT = 1
"""Bumped when an estimator's arithmetic changes, so no estimate made by the old one is reused."""


class SensitivityStore(Protocol):
    """Where estimates are kept by :func:`sensitivity_key` (a directory of files, in practice)."""

    def get(self, key: str) -> Sensitivity | None:
        """The estimate kept under ``key``, or ``None`` when there is none (or none readable)."""
        ...

    def put(self, key: str, sensitivity: Sensitivity) -> None:
        """Keep ``sensitivity`` under ``key`` (best effort: a store that cannot write loses nothing)."""
        ...


def tensor_digest(tensors: list[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 of named tensors: names, dtypes, shapes and bytes, in order."""
    h = hashlib.sha256()
    for name, t in tensors:
        data = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_digest(model: nn.Module) -> str:
    """The float model's architecture (its printed form) and every parameter and buffer."""
    return hashlib.sha256(f"{repr(model)}|{tensor_digest(list(model.state_dict().items()))}".encode()).hexdigest()


def workload_identity(workload: Workload) -> dict[str, object]:
    """What every cache key of a figure measured on ``workload`` holds: the software versions, the
    torch device's type, the float model (architecture and weights), its quantizable layers and
    the data's value range."""
    return {
        "versions": software_versions(),
        "device": workload.device.type,
        "model": model_digest(workload.model),
        "layers": workload.layer_names,
        "value_range": serial.to_dict(workload.data.value_range),
    }


def sensitivity_key(workload: Workload, cfg: SensitivityConfig, reward: dict[str, object]) -> str:
    """The digest an estimate of ``workload`` under ``cfg`` is kept by. ``reward``: what the
    reward contributes (its clean and robust weights and its attack, as plain data), since ``auto``
    resolves by it and the measured estimate weighs by it."""
    x, y = workload.data.subset("train", cfg.samples)
    doc = {
        "format": KEY_FORMAT,
        **workload_identity(workload),
        "images": tensor_digest([("x", x), ("y", y)]),
        "settings": serial.to_dict(cfg),
        "reward": reward,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


__all__ = ["KEY_FORMAT", "SensitivityStore", "model_digest", "sensitivity_key", "tensor_digest", "workload_identity"]
