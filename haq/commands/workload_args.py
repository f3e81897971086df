"""The workload argument group (model, data, input shape, weights, seed, torch device) shared by
every command that discovers layers, its conversion to a :class:`WorkloadConfig`, and the one-line
fix named when a table cannot cost one of the workload's layers. Imports torch (through
haq.models and haq.workload), so only those commands import it."""

from __future__ import annotations

import argparse
import contextlib
import shlex
from pathlib import Path
from typing import Iterator, Sequence

import torch

import latency_tables
from haq.core.errors import HaqError, TableError
from haq.data import DATASETS
from haq.models import model_names
from haq.tables.table import CostTable
from haq.training import parse_torch_device
from haq.workload import DEFAULT_MODEL, WorkloadConfig, resolve_input, workload_layers

ArgGroup = argparse.ArgumentParser | argparse._ArgumentGroup  # noqa: SLF001 - argparse's group type


def add_input_args(g: ArgGroup) -> None:
    """--input-size / --input-shape: the input the layers are discovered at (one rule, see haq.workload)."""
    g.add_argument(
        "--input-size",
        type=int,
        default=None,
        metavar="N",
        help="square input side, e.g. 224 (default: the zoo model's native side, else the dataset's)",
    )
    g.add_argument(
        "--input-shape",
        type=parse_input_shape,
        default=None,
        metavar="C,H,W",
        help="one input's shape, e.g. 3,224,224, for a model priced without a dataset",
    )


def add_data_args(g: ArgGroup, dataset_help: str = "") -> None:
    """--dataset / --data-root and the input arguments: what shape-only commands need."""
    g.add_argument(
        "--dataset",
        default=None,
        help=dataset_help or f"{', '.join(DATASETS)} (default: the model's own; digits for a user model)",
    )
    g.add_argument("--data-root", default=None, help="local directory for cifar10 / imagefolder (never downloaded)")
    add_input_args(g)


def add_workload_args(p: argparse.ArgumentParser) -> None:
    """The model, data, input, weights, seed and torch-device flags."""
    g = p.add_argument_group("workload")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"zoo name ({', '.join(model_names())}) or package.module:callable")
    add_data_args(g)
    g.add_argument(
        "--loader-workers",
        dest="loader_workers",
        type=int,
        default=0,
        help="DataLoader workers decoding image folders (default 0: this process)",
    )
    g.add_argument(
        "--checkpoint",
        default=None,
        help="float state dict (.pt) to load instead of training (torchvision's keys for resnet18 / mobilenet_v2)",
    )
    g.add_argument(
        "--train-epochs",
        type=int,
        default=None,
        help="train for N epochs with the zoo's recipe (a user model without --checkpoint needs it)",
    )
    g.add_argument("--finetune-epochs", type=int, default=None, help="fine-tune --checkpoint on the data for N epochs first")
    g.add_argument("--seed", type=int, default=0, help="data split, training and search seed")
    g.add_argument("--torch-device", default="cpu", help="torch device for training and evaluation (cpu, cuda, cuda:1)")


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """``"3,224,224"`` (or ``3x224x224``) -> (3, 224, 224)."""
    parts = text.replace("x", ",").replace("×", ",").split(",")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W (e.g. 3,224,224), got {text!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive integers C,H,W (e.g. 3,224,224), got {text!r}")
    return dims  # type: ignore[return-value]


def workload_config(ns: argparse.Namespace) -> WorkloadConfig:
    """Build the workload config from parsed arguments (flags a command lacks keep their defaults)."""
    return WorkloadConfig(
        model=ns.model,
        dataset=ns.dataset,
        data_root=ns.data_root,
        checkpoint=getattr(ns, "checkpoint", None),
        seed=getattr(ns, "seed", 0),
        train_epochs=getattr(ns, "train_epochs", None),
        finetune_epochs=getattr(ns, "finetune_epochs", None),
        input_size=getattr(ns, "input_size", None),
        input_shape=getattr(ns, "input_shape", None),
        workers=getattr(ns, "loader_workers", 0),
    )


def torch_device(ns: argparse.Namespace) -> torch.device:
    """Validate ``--torch-device``: a clear error instead of a CUDA traceback."""
    return parse_torch_device(ns.torch_device)


def input_flags(cfg: WorkloadConfig) -> list[str]:
    """The flags that reproduce ``cfg``'s input shape (and the data it is read from) on another command."""
    if cfg.input_shape is not None:
        return ["--input-shape", ",".join(map(str, cfg.input_shape))]
    flags: list[str] = []
    if cfg.dataset is not None:
        flags += ["--dataset", cfg.dataset]
        if cfg.data_root is not None:
            flags += ["--data-root", cfg.data_root]
    side = resolve_input(cfg).shape[1]
    if cfg.input_size is not None or cfg.dataset is not None:
        flags += ["--input-size", str(side)]
    return flags


def build_command(cfg: WorkloadConfig, table: CostTable) -> tuple[str, str]:
    """The ``haq tables build`` command that prices ``cfg``'s layers for ``table``'s device, and the
    table file it writes: the table itself when it is the user's file, never a shipped table."""
    shipped = table.path is not None and Path(table.path).resolve().parent == latency_tables.TABLE_DIR
    out = str(table.path) if table.path is not None and not shipped else f"my-{table.name}.json"
    args = [
        "haq",
        "tables",
        "build",
        "--model",
        cfg.model,
        *input_flags(cfg),
        "--batch",
        str(table.batch),
        "--device",
        table.build_device,
        "--out",
        out,
    ]
    return shlex.join(args), out


def uncovered_layer_error(cfg: WorkloadConfig, table: CostTable) -> TableError | None:
    """A :class:`TableError` naming the first of ``cfg``'s layers ``table`` cannot cost and the
    command that prices it, or ``None`` when the table covers them all."""
    for layer in workload_layers(cfg):
        try:
            table.check_covers([layer])
        except TableError as exc:
            if "cannot cost layer" not in str(exc):
                raise
            command, out = build_command(cfg, table)
            key = layer.signature.with_batch(table.batch).key()
            inp = "x".join(map(str, resolve_input(cfg).shape))
            then = f"then pass --device {out}" if out != str(table.path) else "then run this command again"
            return TableError(
                f"table {table.name} cannot cost layer '{layer.name}' ({key}) of {cfg.model} at input {inp}; "
                f"price it with `{command}`, {then}"
            )
    return None


def _first_uncovered(cfg: WorkloadConfig, tables: Sequence[str]) -> TableError | None:
    """The first table (by name) that cannot cost one of ``cfg``'s layers, judged on shapes alone;
    ``None`` when all can, or when that cannot be told before loading the workload."""
    for name in tables:
        try:
            found = uncovered_layer_error(cfg, latency_tables.load(name))
        except HaqError:  # not a table file ('cpu' is built later), or the workload itself is wrong: reported later
            continue
        if found is not None:
            return found
    return None


@contextlib.contextmanager
def explain_uncovered(cfg: WorkloadConfig, tables: Sequence[str]) -> Iterator[None]:
    """Refuse, before any training, a table that cannot cost one of the workload's layers, with a
    ``haq tables build`` command that works for this workload (its input shape and data
    included); a "cannot cost layer" error raised inside gets the same explanation."""
    early = _first_uncovered(cfg, tables)
    if early is not None:
        raise early
    try:
        yield
    except TableError as exc:
        if "cannot cost layer" not in str(exc):
            raise
        better = _first_uncovered(cfg, tables)
        if better is not None:
            raise better from None
        raise
