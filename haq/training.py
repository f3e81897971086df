"""Supervised training and accuracy evaluation shared by the zoo, calibration and DQ fine-tuning."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from haq.core import validate
from haq.core.errors import ConfigError, DivergedError
from haq.data.splits import DataSplits, iterate_batches

ExtraLoss = Callable[[nn.Module], torch.Tensor]
Progress = Callable[[int, int, float], None]
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a training run.

    epochs: passes over the training split.
    lr: initial learning rate (cosine-annealed to 0).
    batch_size: mini-batch size.
    weight_decay: L2 penalty of the optimizer.
    optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
    seed: seeds the shuffling and augmentation generator.
    threads: torch intra-op threads while training (1 keeps a loaded 2-core machine responsive).
    max_batches: cap on mini-batches per epoch (short fine-tuning), ``None`` for whole epochs.
    """

    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    optimizer: str = "adam"
    seed: int = 0
    threads: int | None = 1
    max_batches: int | None = None

    def __post_init__(self) -> None:
        validate.count("epochs", self.epochs, low=0)
        validate.positive("lr", self.lr)
        validate.count("batch_size", self.batch_size)
        validate.finite("weight_decay", self.weight_decay, low=0.0)
        validate.choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.threads is not None:
            validate.count("threads", self.threads)
        if self.max_batches is not None:
            validate.count("max_batches", self.max_batches)


def parse_torch_device(name: str) -> torch.device:
    """A torch device from a name (``cpu``, ``cuda:1``), with a one-line error instead of a CUDA traceback."""
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"torch device '{name}' is not valid; try cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"torch device '{name}' asked for, but no CUDA GPU is available here; use cpu")
    return dev


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None leaves it alone)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def train_model(
    model: nn.Module,
    data: DataSplits,
    cfg: TrainConfig,
    device: torch.device,
    extra_loss: ExtraLoss | None = None,
    progress: Progress | None = None,
) -> nn.Module:
    """Train ``model`` in place with cross-entropy (+ ``extra_loss(model)``, e.g. a regularizer)."""
    model.to(device)
    if cfg.epochs == 0 or not any(p.requires_grad for p in model.parameters()):
        return model.eval()
    on_gpu = device.type == "cuda"
    loader = data.train_batches(cfg.batch_size, cfg.seed, pin_memory=on_gpu)
    per_epoch = len(loader) if cfg.max_batches is None else min(len(loader), cfg.max_batches)
    opt = _optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs * per_epoch, 1))
    with torch_threads(cfg.threads):
        for epoch in range(cfg.epochs):
            model.train()
            total, seen = 0.0, 0
            for step, (x, y) in enumerate(loader):
                if step >= per_epoch:
                    break
                x, y = x.to(device, non_blocking=on_gpu), y.to(device, non_blocking=on_gpu)
                loss = F.cross_entropy(model(x), y)
                if extra_loss is not None:
                    loss = loss + extra_loss(model)
                if not torch.isfinite(loss):
                    raise DivergedError(
                        f"training diverged at epoch {epoch + 1} (loss {loss.item()}); lower the learning rate (or DQ beta)"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(y)
                seen += len(y)
            if progress is not None:
                progress(epoch + 1, cfg.epochs, total / max(seen, 1))
    opt.zero_grad(set_to_none=True)  # a trained model carries no stale gradients into attacks or DQ
    model.eval()
    return model


@torch.no_grad()
def correct_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Boolean per-sample top-1 correctness of ``model`` in eval mode (mode restored): what an
    accuracy and a per-sample robust worst case are both made of, so one forward pass serves both."""
    was_training = model.training
    model.eval()
    try:
        parts = [model(xb.to(device)).argmax(1).cpu() == yb.cpu() for xb, yb in iterate_batches(x, y, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int = 512) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` in eval mode (mode restored afterwards); 0 on no samples."""
    return mask_accuracy(correct_mask(model, x, y, device, batch_size))


def mask_accuracy(mask: torch.Tensor) -> float:
    """The share of ``True`` in a :func:`correct_mask` (0 when empty)."""
    return float(mask.float().mean()) if len(mask) else 0.0


@torch.no_grad()
def split_accuracy(
    model: nn.Module, data: DataSplits, split: str, device: torch.device, n: int | None = None, batch_size: int = 128
) -> float:
    """Top-1 accuracy on the first ``n`` samples of a split (all when None), decoded batch by batch
    (a whole image-folder split never has to fit in memory)."""
    was_training = model.training
    model.eval()
    on_gpu = device.type == "cuda"
    correct = seen = 0
    for xb, yb in data.batches(split, batch_size, n, pin_memory=on_gpu):
        correct += int((model(xb.to(device, non_blocking=on_gpu)).argmax(1) == yb.to(device, non_blocking=on_gpu)).sum())
        seen += len(yb)
    model.train(was_training)
    return correct / max(seen, 1)
