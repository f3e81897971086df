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

from haq.evaluation.metrics import PolicyMetrics, ReferenceMetrics
from haq.problem.budget import Budget
from haq.problem.config import RewardConfig


def compute_reward(metrics: PolicyMetrics, reference: ReferenceMetrics, budget: Budget, cfg: RewardConfig) -> float:
    """The reward of one evaluated policy (see the module docstring for the formula)."""
    reward = cfg.acc_weight * 100.0 * (metrics.clean_acc - reference.clean_acc)
    if metrics.robust_acc is not None and reference.robust_acc is not None:
        reward += cfg.robust_weight * 100.0 * (metrics.robust_acc - reference.robust_acc)
    reward -= cfg.cost_weight * metrics.cost(budget.metric) / budget.target
    return float(reward)
