"""The workload argument group (model, dataset, checkpoint, seed, torch device) shared by the
commands that train or evaluate a model, and its conversion to configs. Imports torch (through
haq.models and haq.workload), so only those commands import it."""

from __future__ import annotations

import argparse

import torch

from haq.models import model_names
from haq.training import parse_torch_device
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
    return parse_torch_device(ns.torch_device)
