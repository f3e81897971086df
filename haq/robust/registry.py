"""Every attack haq can run, by name, with what it needs: the one place an attack name resolves.

An entry's ``craft`` has one signature for all attacks, ``(target, source, x, y, cfg, device,
value_range)``, where ``source`` is the model transfer and ensemble attacks are crafted on
(usually the float model). Transfer attacks are the white-box ones run on the source model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from haq.core.errors import InternalError
from haq.robust.attacks import AttackConfig, RangeLike, ensemble_pgd, fgsm, pgd, spsa, transfer_pgd

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor, AttackConfig, torch.device, RangeLike], torch.Tensor]
"""A single-model attack: ``(model, x, y, cfg, device, value_range) -> x_adv``."""

Crafter = Callable[[nn.Module, nn.Module | None, torch.Tensor, torch.Tensor, AttackConfig, torch.device, RangeLike], torch.Tensor]
"""A registered attack: ``(target, source, x, y, cfg, device, value_range) -> x_adv``."""


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack.

    craft: adversarial examples against the target (see the module docstring).
    needs_source: crafted with the source model, so it cannot run without one.
    gradient_free: queries only logits, so masked STE gradients cannot fool it.
    description: one line for help texts.
    """

    craft: Crafter
    needs_source: bool
    gradient_free: bool
    description: str


def _on_target(attack: Attack) -> Crafter:
    def craft(
        target: nn.Module,
        _source: nn.Module | None,
        x: torch.Tensor,
        y: torch.Tensor,
        cfg: AttackConfig,
        device: torch.device,
        value_range: RangeLike,
    ) -> torch.Tensor:
        return attack(target, x, y, cfg, device, value_range)

    return craft


def _on_source(attack: Attack) -> Crafter:
    def craft(
        _target: nn.Module,
        source: nn.Module | None,
        x: torch.Tensor,
        y: torch.Tensor,
        cfg: AttackConfig,
        device: torch.device,
        value_range: RangeLike,
    ) -> torch.Tensor:
        return attack(_source_of(source), x, y, cfg, device, value_range)

    return craft


def _ensemble(
    target: nn.Module,
    source: nn.Module | None,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    device: torch.device,
    value_range: RangeLike,
) -> torch.Tensor:
    return ensemble_pgd(target, _source_of(source), x, y, cfg, device, value_range)


def _source_of(source: nn.Module | None) -> nn.Module:
    if source is None:
        raise InternalError("an attack that needs a source model was crafted without one; check_attacks should refuse it")
    return source


ATTACK_REGISTRY: Mapping[str, AttackSpec] = {
    "fgsm": AttackSpec(_on_target(fgsm), False, False, "single-step FGSM on the target (white box, STE gradients)"),
    "pgd": AttackSpec(_on_target(pgd), False, False, "L∞ PGD with random start and restarts on the target"),
    "transfer_fgsm": AttackSpec(_on_source(fgsm), True, False, "FGSM crafted on the source model"),
    "transfer_pgd": AttackSpec(_on_source(transfer_pgd), True, False, "PGD crafted on the source model (all steps)"),
    "ensemble_pgd": AttackSpec(_ensemble, True, False, "PGD on the summed loss of target and source"),
    "spsa": AttackSpec(_on_target(spsa), False, True, "gradient-free SPSA on the target's logits"),
}
