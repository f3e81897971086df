"""The episode reward: a documented, weighted combination of accuracy, robustness and cost.

    R = acc_weight    · 100 · (clean_acc  − float clean_acc)
      + robust_weight · 100 · (robust_acc − float robust_acc)      (0 when no attacks were run)
      − cost_weight   · cost / budget

Accuracy terms are in percentage points against the float model measured on the same held-out
images (HAQ's reward is the first term with weight 0.1). The cost term is a gentle preference
for cheaper policies; the budget itself is a hard constraint enforced by the environment, so
``cost / budget`` is at most 1 for additive tables.
"""

from __future__ import annotations

import math

from haq.evaluation.metrics import PolicyMetrics, ReferenceMetrics
from haq.problem.budget import Budget
from haq.problem.config import RewardConfig


def compute_reward(metrics: PolicyMetrics, reference: ReferenceMetrics, budget: Budget, cfg: RewardConfig) -> float:
    """The reward of one evaluated policy (see the module docstring for the formula)."""
    return accuracy_term(metrics, reference, cfg) - cost_term(metrics, budget, cfg)


def accuracy_term(metrics: PolicyMetrics, reference: ReferenceMetrics, cfg: RewardConfig) -> float:
    """The reward's accuracy terms (clean and, when attacks ran, robust): what a policy earns on
    any device, since its accuracies depend on the model and evaluator alone."""
    term = cfg.acc_weight * 100.0 * (metrics.clean_acc - reference.clean_acc)
    if metrics.robust_acc is not None and reference.robust_acc is not None:
        term += cfg.robust_weight * 100.0 * (metrics.robust_acc - reference.robust_acc)
    return float(term)


def cost_term(metrics: PolicyMetrics, budget: Budget, cfg: RewardConfig) -> float:
    """The reward's cost penalty (subtracted): the device's share of the reward."""
    return float(cfg.cost_weight * metrics.cost(budget.metric) / budget.target)


def image_reward(cfg: RewardConfig, images: int) -> float:
    """The reward one more image classified right adds to a clean accuracy measured on ``images``:
    the unit in which rewards measured on so few images can be told apart at all."""
    if images < 1:
        raise ValueError(f"image count must be >= 1, got {images}")
    return cfg.acc_weight * 100.0 / images


def sampling_std(metrics: PolicyMetrics, cfg: RewardConfig, clean_images: int, robust_images: int) -> float:
    """The standard error of a reward from the images its accuracies were measured on: each
    accuracy a binomial proportion (std √(p(1−p)/n), at the measured p), the two terms
    independent, the float reference and the cost exact. Why: rewards that differ by less than
    this are the same policy quality as far as those images can tell (one image of 300 is 0.033
    at HAQ's weight). A lower bound where a fine-tune adds its own noise (the full evaluator)."""
    if clean_images < 1 or robust_images < 1:
        raise ValueError(f"image counts must be >= 1, got {clean_images} and {robust_images}")
    var = (cfg.acc_weight * 100.0) ** 2 * metrics.clean_acc * (1.0 - metrics.clean_acc) / clean_images
    if metrics.robust_acc is not None:
        var += (cfg.robust_weight * 100.0) ** 2 * metrics.robust_acc * (1.0 - metrics.robust_acc) / robust_images
    return math.sqrt(max(var, 0.0))
