"""Argument groups shared by several sub-commands, and their conversion to configs."""

from __future__ import annotations

import argparse
import sys

import torch

from haq.core.errors import ConfigError
from haq.models import model_names
from haq.workload import DEFAULT_MODEL, WorkloadConfig


def add_workload_args(p: argparse.ArgumentParser) -> None:
    """--model / --dataset / --data-root / --checkpoint / --seed / --torch-device."""
    g = p.add_argument_group("workload")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"zoo name ({', '.join(model_names())}) or package.module:callable")
    g.add_argument("--dataset", default=None, help="digits, digits32, cifar10 or imagefolder (default: the model's own)")
    g.add_argument("--data-root", default=None, help="local directory for cifar10 / imagefolder (never downloaded)")
    g.add_argument("--checkpoint", default=None, help="float state dict (.pt) to load instead of training")
    g.add_argument("--seed", type=int, default=0, help="data split, training and search seed")
    g.add_argument("--torch-device", default="cpu", help="torch device for training and evaluation (cpu, cuda, cuda:1)")


def workload_config(ns: argparse.Namespace) -> WorkloadConfig:
    """Build the workload config from parsed arguments."""
    return WorkloadConfig(model=ns.model, dataset=ns.dataset, data_root=ns.data_root, checkpoint=ns.checkpoint, seed=ns.seed)


def torch_device(ns: argparse.Namespace) -> torch.device:
    """Validate ``--torch-device``: a clear error instead of a CUDA traceback."""
    try:
        dev = torch.device(ns.torch_device)
    except RuntimeError as exc:
        raise ConfigError(f"--torch-device '{ns.torch_device}' is not a torch device (try cpu or cuda)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--torch-device cuda asked for, but no CUDA GPU is available here; use --torch-device cpu")
    return dev


def log(msg: str) -> None:
    """Progress messages go to stderr so stdout stays machine-readable."""
    print(msg, file=sys.stderr, flush=True)
