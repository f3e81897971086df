"""L∞ adversarial attacks for float and fake-quantized models: FGSM, PGD, transfer, ensemble, SPSA.

Gradients of quantized models flow through the straight-through estimator, so white-box attacks
on low-bit models can be masked; transfer (crafted on another model), ensemble (float and
quantized losses summed) and gradient-free SPSA are the checks that masking cannot fool.

Every attack runs with the models in eval mode and their parameters frozen, both restored
afterwards; input gradients come from ``torch.autograd.grad`` so no parameter ``.grad`` is ever
written; all randomness comes from a seeded ``torch.Generator`` drawn on the CPU (the same
numbers on every device). Each sample keeps its worst point over restarts: the first one that
fools the judging model, else the one with the highest loss. ``eps == 0`` returns the input.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from haq.core import validate
from haq.core.errors import ConfigError, DataError
from haq.data.space import InputRange

RangeLike = Sequence[float] | InputRange
"""The attackable inputs: ``(low, high)`` for un-normalized data, or a dataset's :class:`InputRange`."""
_MAX_PROBES = 8192  # SPSA probes evaluated in one forward pass (bounds memory on big inputs)


@dataclass(frozen=True)
class AttackConfig:
    """Budget and hyper-parameters shared by all attacks.

    eps: L∞ radius in pixel units (e.g. 8/255 for [0, 1] images); on normalized inputs it is
        ε / std per channel in the model's input space (see :class:`~haq.data.InputRange`).
    pgd_steps: iterations of PGD (and of the transfer / ensemble PGD).
    step_size: PGD step; ``None`` uses ``2.5 * eps / pgd_steps`` (Madry et al.).
    restarts: PGD restarts, each from a fresh random start; per-sample worst case is kept.
    random_start: start PGD uniformly inside the ε-ball (otherwise at the clean input).
    spsa_steps: SPSA iterations.
    spsa_samples: Rademacher direction pairs per SPSA gradient estimate.
    spsa_delta: SPSA finite-difference probe size in pixel units (≈0.05 for [0, 1] data).
    spsa_step_size: SPSA signed step; ``None`` uses ``eps / 4`` (larger steps than PGD's
        offset the noise of the gradient estimate).
    seed: seeds every random draw (random starts, SPSA directions).
    batch_size: samples attacked at once (SPSA evaluates ``2 * spsa_samples`` probes each).
    """

    eps: float
    pgd_steps: int = 10
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    spsa_steps: int = 20
    spsa_samples: int = 16
    spsa_delta: float = 0.05
    spsa_step_size: float | None = None
    seed: int = 0
    batch_size: int = 512

    def __post_init__(self) -> None:
        validate.finite("attack eps", self.eps, low=0.0)
        for name in ("pgd_steps", "restarts", "spsa_steps", "spsa_samples", "batch_size"):
            validate.count(f"attack {name}", getattr(self, name))
        validate.positive("attack spsa_delta", self.spsa_delta)
        for name in ("step_size", "spsa_step_size"):
            if getattr(self, name) is not None:
                validate.positive(f"attack {name}", getattr(self, name))

    @property
    def pgd_step(self) -> float:
        """The PGD step actually used."""
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.pgd_steps

    @property
    def spsa_step(self) -> float:
        """The SPSA step actually used."""
        return self.spsa_step_size if self.spsa_step_size is not None else 0.25 * self.eps


def check_value_range(value_range: RangeLike) -> InputRange:
    """Validate ``(low, high)`` of the input data, or pass a dataset's :class:`InputRange` through."""
    if isinstance(value_range, InputRange):
        return value_range
    if len(value_range) != 2:
        raise ConfigError(f"value_range must be (low, high), got {tuple(value_range)!r}")
    lo, hi = float(value_range[0]), float(value_range[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"value_range must be finite with low < high, got ({lo}, {hi})")
    return InputRange(lo, hi)


@dataclass(frozen=True)
class Box:
    """One batch's valid inputs in the model's space: bounds ``lo`` / ``hi`` and ``scale``, the
    model-input units per pixel unit (all broadcastable against the batch)."""

    lo: torch.Tensor
    hi: torch.Tensor
    scale: torch.Tensor

    @staticmethod
    def of(space: InputRange, like: torch.Tensor) -> Box:
        """The box of ``space`` on ``like``'s device and dtype."""
        lo, hi = space.bounds(like)
        return Box(lo, hi, space.scale(like))

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """Into the valid inputs."""
        return torch.minimum(torch.maximum(x, self.lo), self.hi)


@contextlib.contextmanager
def frozen_eval(models: Sequence[nn.Module]) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` on every parameter, both restored on exit.

    Freezing parameters makes attacks cheaper (no weight graph) and guarantees that nothing an
    attack does can touch the models' training state.
    """
    modes = [(m, m.training) for m in models]
    params = {id(p): (p, p.requires_grad) for m in models for p in m.parameters()}
    try:
        for m in models:
            m.eval()
        for p, _ in params.values():
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in params.values():
            p.requires_grad_(flag)
        for m, mode in modes:
            m.train(mode)


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, box: Box) -> torch.Tensor:
    """Back into the ε-ball around ``x`` (``eps`` in model-input units) and the data range."""
    return box.clamp(torch.minimum(torch.maximum(x_adv, x - eps), x + eps))


def _uniform(shape: torch.Size, eps: torch.Tensor, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Uniform noise in [-eps, eps], drawn on the CPU for device-independent results."""
    noise = torch.rand(shape, generator=gen, dtype=like.dtype) * 2.0 - 1.0
    return noise.to(like.device) * eps


def _rademacher(shape: tuple[int, ...], gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """±1 entries with equal probability, drawn on the CPU."""
    bits = torch.randint(0, 2, shape, generator=gen)
    return (bits.to(like.dtype) * 2.0 - 1.0).to(like.device)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """True-class logit minus the best other logit: negative means misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - others.amax(1)


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _pgd_batch(
    loss_models: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    box: Box,
    early_stop: bool,
    gen: torch.Generator,
) -> torch.Tensor:
    """PGD on the summed cross-entropy of ``loss_models``; the first of them (the judge) picks the worst.

    With ``early_stop`` a sample stops moving once the judge misclassifies it (the judge is the
    attacked model in white-box use), which is both faster and keeps the fooling point.
    """
    eps, step = cfg.eps * box.scale, cfg.pgd_step * box.scale
    best = x.clone()
    best_loss = torch.full((len(x),), float("-inf"), dtype=x.dtype, device=x.device)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(cfg.restarts):
        todo = (~fooled).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        xs, ys = x[todo], y[todo]
        xa = _project(xs + _uniform(xs.shape, eps, gen, xs), xs, eps, box) if cfg.random_start else xs.clone()
        active = torch.ones(len(todo), dtype=torch.bool, device=x.device)
        for _ in range(cfg.pgd_steps):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            point = xa[idx].requires_grad_(True)
            logits = [m(point) for m in loss_models]
            loss = sum(F.cross_entropy(z, ys[idx], reduction="sum") for z in logits)
            (grad,) = torch.autograd.grad(loss, point)
            if early_stop:  # samples the judge already misclassifies keep their fooling point
                still = logits[0].detach().argmax(1) == ys[idx]
                active[idx] = still
                idx, grad = idx[still], grad[still]
            xa[idx] = _project(xa[idx] + step * grad.sign(), xs[idx], eps, box)
        with torch.no_grad():
            logits = loss_models[0](xa)
            loss = F.cross_entropy(logits, ys, reduction="none")
            wrong = logits.argmax(1) != ys
        take = wrong | (loss > best_loss[todo])
        best[todo[take]] = xa[take]
        best_loss[todo[take]] = loss[take]
        fooled[todo[wrong]] = True
    return best


def _spsa_batch(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig, box: Box, gen: torch.Generator
) -> torch.Tensor:
    """SPSA (Uesato et al. 2018) on the margin loss with signed steps; queries only logits."""
    xa = x.clone()
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    k, delta = cfg.spsa_samples, cfg.spsa_delta * box.scale
    eps, step = cfg.eps * box.scale, cfg.spsa_step * box.scale
    for _ in range(cfg.spsa_steps):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        cur, ys = xa[idx], y[idx]
        v = _rademacher((len(idx), k, *x.shape[1:]), gen, x)
        probes = box.clamp(torch.cat([(cur[:, None] + delta * v), (cur[:, None] - delta * v)], 1))
        m = margin(model(probes.flatten(0, 1)), ys.repeat_interleave(2 * k)).view(len(idx), 2 * k)
        diff = (m[:, :k] - m[:, k:]) / (2.0 * cfg.spsa_delta)
        grad = (diff.view(len(idx), k, *([1] * (x.dim() - 1))) * v).mean(1)
        xa[idx] = _project(cur - step * grad.sign(), x[idx], eps, box)
        active[idx] = model(xa[idx]).argmax(1) == ys
    return xa


BatchAttack = Callable[[torch.Tensor, torch.Tensor, Box, torch.Generator], torch.Tensor]
"""One batch's adversarial examples from ``(x, y, valid inputs, generator)``."""


def _run(
    models: Sequence[nn.Module],
    attack: BatchAttack,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    device: torch.device,
    value_range: RangeLike,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Shared driver: validation, batching, frozen eval mode of ``models``, seeded generator."""
    space = check_value_range(value_range)
    if len(x) != len(y):
        raise DataError(f"attack inputs and labels differ in length: {len(x)} vs {len(y)}")
    x = x.to(device)
    if cfg.eps == 0 or len(x) == 0:
        return x.clone()
    y = y.to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = torch.empty_like(x)
    box = Box.of(space, x)
    with frozen_eval(models):
        for sl in _batches(len(x), batch_size or cfg.batch_size):
            out[sl] = attack(x[sl], y[sl], box, gen)
    return out.detach()


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    device: torch.device,
    value_range: RangeLike = (0.0, 1.0),
) -> torch.Tensor:
    """Single-step FGSM: ``x + eps * sign(∇x CE)``, clamped to the data range.

    Crafted on another model than the one it is evaluated on, it is the transfer FGSM.
    """

    @torch.enable_grad()
    def step(xb: torch.Tensor, yb: torch.Tensor, box: Box, _gen: torch.Generator) -> torch.Tensor:
        point = xb.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(point), yb, reduction="sum"), point)
        return box.clamp(xb + cfg.eps * box.scale * grad.sign())

    return _run([model], step, x, y, cfg, device, value_range)


def _pgd(
    loss_models: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    device: torch.device,
    value_range: RangeLike,
    early_stop: bool,
) -> torch.Tensor:
    """PGD on the summed loss of ``loss_models``, judged by the first."""

    @torch.enable_grad()
    def step(xb: torch.Tensor, yb: torch.Tensor, box: Box, gen: torch.Generator) -> torch.Tensor:
        return _pgd_batch(loss_models, xb, yb, cfg, box, early_stop, gen)

    return _run(loss_models, step, x, y, cfg, device, value_range)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    device: torch.device,
    value_range: RangeLike = (0.0, 1.0),
) -> torch.Tensor:
    """White-box L∞ PGD with random start and restarts (per-sample worst case kept)."""
    return _pgd([model], x, y, cfg, device, value_range, early_stop=True)


def transfer_pgd(
    source: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    device: torch.device,
    value_range: RangeLike = (0.0, 1.0),
) -> torch.Tensor:
    """PGD crafted on ``source`` alone (all steps, no early stop) to be evaluated on a target."""
    return _pgd([source], x, y, cfg, device, value_range, early_stop=False)


def ensemble_pgd(
    target: nn.Module,
    source: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    device: torch.device,
    value_range: RangeLike = (0.0, 1.0),
) -> torch.Tensor:
    """PGD on the summed loss of ``target`` and ``source`` (Bernhard et al.'s float + quantized
    ensemble): the float member supplies gradients the quantized one masks."""
    return _pgd([target, source], x, y, cfg, device, value_range, early_stop=True)


def spsa(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    device: torch.device,
    value_range: RangeLike = (0.0, 1.0),
) -> torch.Tensor:
    """Gradient-free SPSA: immune to masked or misleading STE gradients."""

    @torch.no_grad()
    def step(xb: torch.Tensor, yb: torch.Tensor, box: Box, gen: torch.Generator) -> torch.Tensor:
        return _spsa_batch(model, xb, yb, cfg, box, gen)

    batch = max(1, min(cfg.batch_size, _MAX_PROBES // (2 * cfg.spsa_samples)))
    return _run([model], step, x, y, cfg, device, value_range, batch)
