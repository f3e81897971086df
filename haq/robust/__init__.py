"""Robustness toolkit: attacks (incl. masking-proof ones) and their registry, worst-case robust
accuracy, error amplification and Lipschitz estimates, and Defensive Quantization fine-tuning."""

from haq.robust.amplification import (
    error_amplification,
    lipschitz_estimates,
    spectral_norm,
)
from haq.robust.attacks import (
    AttackConfig,
    ensemble_pgd,
    fgsm,
    pgd,
    spsa,
    transfer_pgd,
)
from haq.robust.dq import DQConfig, dq_finetune_, gram_penalty, orthogonal_penalty
from haq.robust.evaluate import (
    ATTACKS,
    DEFAULT_ATTACKS,
    RobustReport,
    craft,
    report_from_examples,
    robust_accuracy,
)
from haq.robust.registry import ATTACK_REGISTRY, AttackSpec

__all__ = [
    "ATTACKS",
    "ATTACK_REGISTRY",
    "DEFAULT_ATTACKS",
    "AttackConfig",
    "AttackSpec",
    "DQConfig",
    "RobustReport",
    "craft",
    "dq_finetune_",
    "ensemble_pgd",
    "error_amplification",
    "fgsm",
    "gram_penalty",
    "lipschitz_estimates",
    "orthogonal_penalty",
    "pgd",
    "report_from_examples",
    "robust_accuracy",
    "spectral_norm",
    "spsa",
    "transfer_pgd",
]
