"""The per-layer sensitivity a problem's reward calls for: one entry point for the baselines, the
action prior and the objective agent, so all of them allocate with the same error model."""

from __future__ import annotations

import copy

from haq.core import config as serial
from haq.core.types import Log
from haq.evaluation.evaluators import attack_config
from haq.problem.config import EnvConfig
from haq.problem.measured_sensitivity import LossWeights, measure_sensitivity, measure_share, merge_shares, share_layers
from haq.problem.pool import WorkerPool
from haq.problem.sensitivity import Sensitivity, SensitivityConfig, estimate_sensitivity
from haq.problem.sensitivity_store import SensitivityStore, sensitivity_key
from haq.robust import pgd
from haq.training import accuracy, torch_threads
from haq.workload import Workload

ROBUST_FLOOR = 0.1
"""The least accuracy the float model must keep on its own PGD images for ``auto`` to measure.
Below it the attack has already broken the model: robust accuracy sits at its floor whatever the
bits, and the adversarial loss only says how confidently wrong the model is, which quantization
noise lowers. Measured with the full evaluator's attack: the digits CNN and MLP keep 41 % and 24 %
and the measured estimate lifted their ILP from −0.238 to +1.019 and −0.195 to +1.052; ResNet-20
keeps 0 %, and there its ILP candidates fell from −0.033 (Fisher) to −1.064."""


def float_robust_accuracy(env: EnvConfig, workload: Workload, samples: int) -> float:
    """The float model's accuracy on PGD images (the evaluator's attack) of its first ``samples``
    training images, the ones a sensitivity estimate uses."""
    net = copy.deepcopy(workload.model).to(workload.device).eval()
    x, y = workload.data.subset("train", samples)
    x, y = x.to(workload.device), y.to(workload.device)
    with torch_threads(1):
        adversarial = pgd(
            net, x, y, attack_config(env.evaluation, workload.config.seed), workload.device, workload.data.value_range
        )
        return accuracy(net, adversarial, y, workload.device)


def resolved_estimator(env: EnvConfig, cfg: SensitivityConfig, workload: Workload | None = None) -> str:
    """``cfg.estimator`` with ``auto`` resolved: measured when the reward has a robustness term and
    the float model keeps at least :data:`ROBUST_FLOOR` on its PGD images (the Fisher estimate
    models the clean loss only), Fisher otherwise. ``workload`` is needed only to tell the latter."""
    if cfg.estimator != "auto":
        return cfg.estimator
    if not env.rewards_robustness:
        return "fisher"
    if workload is None:
        raise ValueError("resolving 'auto' for a reward with a robustness term needs the workload")
    return "measured" if float_robust_accuracy(env, workload, cfg.samples) >= ROBUST_FLOOR else "fisher"


def reward_sensitivity(
    env: EnvConfig,
    workload: Workload,
    cfg: SensitivityConfig = SensitivityConfig(),
    log: Log | None = None,
    pool: WorkerPool | None = None,
    store: SensitivityStore | None = None,
) -> Sensitivity:
    """Every layer's sensitivity for ``env``'s reward, by the estimator ``cfg`` resolves to
    (``log`` hears the measured estimate's progress). A measured estimate is spread over ``pool``'s
    workers, each measuring a share of the layers on the workload it holds, when it has more than
    one: the same figures (each layer is measured alone), without the driver's serial minutes on a
    deep model. ``store`` keeps the estimate by what determines it and hands back one made before
    (:mod:`haq.problem.sensitivity_store`): a later run on the same model skips the estimate."""
    weights = loss_weights(env, workload)
    if store is None:
        return _estimate(env, workload, cfg, weights, log, pool)
    key = _key(workload, cfg, weights)
    kept = store.get(key)
    if kept is not None and list(kept.layers) == workload.layer_names:
        if log and kept.estimator == "measured":  # said as its measuring would have been; Fisher's seconds never are
            log(f"sensitivity: reused the measured estimate of {len(kept.layers)} layers made for this model and reward ({key})")
        return kept
    estimate = _estimate(env, workload, cfg, weights, log, pool)
    store.put(key, estimate)
    return estimate


def loss_weights(env: EnvConfig, workload: Workload) -> LossWeights:
    """How ``env``'s reward weighs the clean and adversarial loss a measured estimate adds up, and
    the attack that crafts its adversarial images (none when the reward has no robustness term)."""
    robust = env.rewards_robustness
    return LossWeights(
        clean=env.reward.acc_weight,
        adversarial=env.reward.robust_weight if robust else 0.0,
        attack=attack_config(env.evaluation, workload.config.seed) if robust else None,
    )


def reward_sensitivity_key(env: EnvConfig, workload: Workload, cfg: SensitivityConfig) -> str:
    """What :func:`reward_sensitivity` keeps its estimate by: the workload and settings, and of
    the reward what ``auto`` resolves by and the measured estimate weighs by."""
    return _key(workload, cfg, loss_weights(env, workload))


def _key(workload: Workload, cfg: SensitivityConfig, weights: LossWeights) -> str:
    attack = None if weights.attack is None else serial.to_dict(weights.attack)
    return sensitivity_key(workload, cfg, {"clean": weights.clean, "robust": weights.adversarial, "attack": attack})


def _estimate(
    env: EnvConfig, workload: Workload, cfg: SensitivityConfig, weights: LossWeights, log: Log | None, pool: WorkerPool | None
) -> Sensitivity:
    """The estimate itself: Fisher, or measured in-process or in shares on ``pool``."""
    if resolved_estimator(env, cfg, workload) == "fisher":
        return estimate_sensitivity(workload.model, workload.layers, workload.data, workload.device, cfg)
    if pool is None or pool.workers < 2 or len(workload.layers) < 2:
        return measure_sensitivity(workload.model, workload.layers, workload.data, workload.device, weights, cfg, log)
    names = workload.layer_names
    shares = share_layers(names, pool.workers)  # one each: a share crafts its own PGD images
    if log:
        log(f"measured sensitivity: {len(names)} layers in {len(shares)} shares on {pool.workers} workers")
    finished: list[int] = []

    def done(i: int) -> None:
        finished.append(i)
        if log:
            log(f"measured sensitivity: {len(finished)}/{len(shares)} shares done ({', '.join(shares[i])})")

    return merge_shares(names, pool.map_workload(measure_share, [(weights, cfg, share) for share in shares], done))
