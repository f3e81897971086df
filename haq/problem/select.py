"""The final pick of a run, made honestly: rewards on the search's few hundred images favour lucky
policies, so the top ``k`` of a run are re-scored on held-out images the search never saw before
one is chosen, and the chosen policy is reported on the test split.

Three disjoint image sets: the search scores on the first ``val_samples`` validation images; the
pick re-scores on the validation images after them when at least ``select_samples`` are left,
otherwise on the first half of the test split; the report uses the test split (its second half
when the first half picked). Re-scoring uses the run's judge (the full evaluator of a
multi-fidelity run), with the float reference measured on the same images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from torch.utils.data import Dataset, Subset

from haq.core.errors import ConfigError
from haq.core.validate import count
from haq.evaluation.evaluators import PolicyKey, QuantizingEvaluator, build_evaluator, policy_key
from haq.evaluation.metrics import PolicyMetrics
from haq.problem.fidelity import FULL
from haq.problem.problem import MULTI, SearchProblem
from haq.quant import QuantPolicy


@dataclass(frozen=True)
class Pick:
    """The outcome of :func:`pick_final`.

    index: position (in the candidates given) of the chosen policy.
    select_rewards: reward of each of the top ``k`` on the selection images, by candidate index.
    test: the chosen policy's metrics and reward on the report images.
    select_images / test_images: where and how many images each stage used.
    """

    index: int
    policy: QuantPolicy
    select_rewards: dict[int, float]
    test: PolicyMetrics
    test_reward: float
    select_images: str
    test_images: str


def _split(data: Dataset, start: int, stop: int) -> Dataset:
    return Subset(data, range(start, stop))


def pick_final(
    problem: SearchProblem,
    candidates: Sequence[tuple[QuantPolicy, float]],
    k: int = 5,
    select_samples: int = 150,
) -> Pick:
    """Re-score the ``k`` best distinct ``(policy, search reward)`` candidates on held-out images,
    choose the best there, and report it on the test images (see the module docstring)."""
    count("k", k)
    count("select_samples", select_samples)
    if not candidates:
        raise ConfigError("pick_final needs at least one evaluated policy")
    order = sorted(range(len(candidates)), key=lambda i: (-candidates[i][1], i))
    top: list[int] = []
    seen: set[PolicyKey] = set()
    for i in order:
        key = policy_key(candidates[i][0])
        if key not in seen:
            seen.add(key)
            top.append(i)
        if len(top) == k:
            break
    wl, cfg = problem.workload, problem.config
    val, test = wl.data.val, wl.data.test
    n_val, n_test = len(val), len(test)  # type: ignore[arg-type]
    searched = cfg.evaluation.val_samples
    if n_val - searched >= select_samples:
        select, select_name = _split(val, searched, searched + select_samples), f"val[{searched}:{searched + select_samples}]"
        report, report_name = test, f"test[0:{n_test}]"
    else:
        half = n_test // 2
        select, select_name = _split(test, 0, half), f"test[0:{half}]"
        report, report_name = _split(test, half, n_test), f"test[{half}:{n_test}]"
    kind = FULL if cfg.evaluation.kind == MULTI else cfg.evaluation.kind

    def scorer(images: Dataset) -> QuantizingEvaluator:
        n = len(images)  # type: ignore[arg-type]
        robust = min(cfg.evaluation.robust_samples, n)
        ev_cfg = dataclasses.replace(cfg.evaluation, kind=kind, val_samples=n, robust_samples=robust)
        return build_evaluator(dataclasses.replace(wl, data=dataclasses.replace(wl.data, val=images)), problem.table, ev_cfg)

    selector = scorer(select)
    select_rewards = {i: problem.reward(selector.evaluate(candidates[i][0]), selector.reference) for i in top}
    chosen = max(top, key=lambda i: (select_rewards[i], -top.index(i)))
    reporter = scorer(report)
    metrics = reporter.evaluate(candidates[chosen][0])
    reward = problem.reward(metrics, reporter.reference)
    return Pick(chosen, candidates[chosen][0], select_rewards, metrics, reward, select_name, report_name)


__all__ = ["Pick", "pick_final"]
