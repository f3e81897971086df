"""Robust accuracy: each attack's accuracy and the per-sample worst case over a set of attacks.

A sample counts as correct under an attack only if the model classifies both the clean input
and the adversarial one correctly (the attacker may always submit the clean input), so every
attack's accuracy is at most the clean accuracy and ``eps == 0`` gives exactly the clean one.
The worst case counts a sample as robust only if it survives every attack in the set; it is
the number to optimise, because a single white-box STE attack rewards gradient masking.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from haq.core import config as serial
from haq.core.errors import ConfigError, DataError
from haq.core.types import Log
from haq.robust.attacks import AttackConfig, RangeLike
from haq.robust.registry import ATTACK_REGISTRY
from haq.training import correct_mask

ATTACKS: tuple[str, ...] = tuple(ATTACK_REGISTRY)
NEEDS_SOURCE = frozenset(name for name, spec in ATTACK_REGISTRY.items() if spec.needs_source)
DEFAULT_ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "transfer_pgd")


@dataclass(frozen=True)
class RobustReport:
    """Outcome of :func:`robust_accuracy` on ``n`` samples at radius ``eps``.

    clean: clean accuracy.
    per_attack: accuracy under each attack (clean-and-adversarial correct).
    worst_case: fraction correct on clean and under every attack.
    strongest: the attack with the lowest accuracy (first in the given order on ties).
    seconds: wall time of each attack.
    """

    n: int
    eps: float
    clean: float
    per_attack: Mapping[str, float]
    worst_case: float
    strongest: str
    seconds: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return serial.to_dict(self)


def check_attacks(attacks: Sequence[str], has_source: bool) -> tuple[str, ...]:
    """Validate attack names (non-empty, known, no duplicates, source given where needed)."""
    names = tuple(attacks)
    if not names:
        raise ConfigError(f"choose at least one attack from {', '.join(ATTACKS)}")
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        raise ConfigError(f"unknown attack(s) {unknown}; choose from {', '.join(ATTACKS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"attack list {list(names)} names an attack twice")
    if not has_source and NEEDS_SOURCE.intersection(names):
        needing = sorted(NEEDS_SOURCE.intersection(names))
        raise ConfigError(f"attack(s) {needing} need source_model (usually the float model); pass it or drop them")
    return names


def craft(
    attack: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    device: torch.device,
    value_range: RangeLike,
    source_model: nn.Module | None = None,
) -> torch.Tensor:
    """Adversarial examples of one named attack against ``model`` (the target)."""
    (name,) = check_attacks([attack], source_model is not None)
    return ATTACK_REGISTRY[name].craft(model, source_model, x, y, cfg, device, value_range)


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Sequence[str],
    cfg: AttackConfig,
    device: torch.device,
    value_range: RangeLike,
    source_model: nn.Module | None = None,
    log: Log | None = None,
    clean: torch.Tensor | None = None,
) -> RobustReport:
    """Run ``attacks`` against ``model`` on ``(x, y)`` and aggregate them per sample.

    Transfer and ensemble attacks are crafted with ``source_model`` (the float model, usually);
    ``clean`` as in :func:`report_from_examples`.
    """
    names = check_attacks(attacks, source_model is not None)
    if len(x) == 0 or len(x) != len(y):
        raise DataError(f"robust_accuracy needs matching, non-empty inputs and labels (got {len(x)} and {len(y)})")
    examples: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    for name in names:
        start = time.perf_counter()
        examples[name] = craft(name, model, x, y, cfg, device, value_range, source_model)
        seconds[name] = time.perf_counter() - start
        if log is not None:
            log(f"  {name}: crafted in {seconds[name]:.2f}s")
    return report_from_examples(model, x, y, examples, device, float(cfg.eps), seconds, clean)


def report_from_examples(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    examples: Mapping[str, torch.Tensor],
    device: torch.device,
    eps: float,
    seconds: Mapping[str, float] | None = None,
    clean: torch.Tensor | None = None,
) -> RobustReport:
    """Aggregate ready-made adversarial examples (e.g. transfer examples crafted once and
    reused for many targets) into a :class:`RobustReport` for ``model``. ``clean`` is the
    model's :func:`correct_mask` on ``x`` when the caller has it already (an evaluator that
    measured clean accuracy on those images): one forward pass fewer."""
    if not examples:
        raise DataError("report_from_examples needs at least one attack's examples")
    if len(x) == 0 or len(x) != len(y):
        raise DataError(f"inputs and labels must be matching and non-empty (got {len(x)} and {len(y)})")
    bad = [name for name, x_adv in examples.items() if x_adv.shape != x.shape]
    if bad:
        raise DataError(f"adversarial examples of {bad} do not have the inputs' shape {tuple(x.shape)}")
    if clean is None:
        clean = correct_mask(model, x, y, device)
    elif clean.shape != (len(y),):
        raise DataError(f"the clean correctness mask has shape {tuple(clean.shape)}, the inputs {len(y)} samples")
    survived = clean.clone()
    per_attack: dict[str, float] = {}
    for name, x_adv in examples.items():
        ok = clean & correct_mask(model, x_adv, y, device)
        per_attack[name] = float(ok.float().mean())
        survived &= ok
    strongest = min(per_attack, key=lambda a: per_attack[a])
    return RobustReport(
        n=len(y),
        eps=eps,
        clean=float(clean.float().mean()),
        per_attack=per_attack,
        worst_case=float(survived.float().mean()),
        strongest=strongest,
        seconds=dict(seconds or {}),
    )
