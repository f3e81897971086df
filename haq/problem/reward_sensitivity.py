"""The per-layer sensitivity a problem's reward calls for: one entry point for the baselines, the
action prior and the objective agent, so all of them allocate with the same error model."""

from __future__ import annotations

from haq.core.types import Log
from haq.evaluation.evaluators import attack_config
from haq.problem.config import EnvConfig
from haq.problem.measured_sensitivity import LossWeights, measure_sensitivity
from haq.problem.sensitivity import Sensitivity, SensitivityConfig, estimate_sensitivity
from haq.workload import Workload


def resolved_estimator(env: EnvConfig, cfg: SensitivityConfig) -> str:
    """``cfg.estimator`` with ``auto`` resolved: measured when the reward has a robustness term
    (the Fisher estimate models the clean loss only), Fisher otherwise."""
    if cfg.estimator != "auto":
        return cfg.estimator
    return "measured" if env.rewards_robustness else "fisher"


def reward_sensitivity(
    env: EnvConfig, workload: Workload, cfg: SensitivityConfig = SensitivityConfig(), log: Log | None = None
) -> Sensitivity:
    """Every layer's sensitivity for ``env``'s reward, by the estimator ``cfg`` resolves to
    (``log`` hears the measured estimate's progress)."""
    if resolved_estimator(env, cfg) == "fisher":
        return estimate_sensitivity(workload.model, workload.layers, workload.data, workload.device, cfg)
    robust = env.rewards_robustness
    weights = LossWeights(
        clean=env.reward.acc_weight,
        adversarial=env.reward.robust_weight if robust else 0.0,
        attack=attack_config(env.evaluation, workload.config.seed) if robust else None,
    )
    return measure_sensitivity(workload.model, workload.layers, workload.data, workload.device, weights, cfg, log)
