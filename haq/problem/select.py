"""The final pick of a run, made honestly: rewards on the search's few hundred images favour lucky
policies, so the top ``k`` of a run are re-scored on held-out images the search never saw before
one is chosen, and the chosen policy is reported on the test split.

Three disjoint image sets: the search scores on the first ``val_samples`` validation images; the
pick re-scores on the validation images after them when at least ``select_samples`` are left,
otherwise on the first half of the test split; the report uses the test split (its second half
when the first half picked). Re-scoring uses the run's judge (the full evaluator of a
multi-fidelity run), with the float reference measured on the same images, on the problem's
worker pool where it has one (:meth:`SearchProblem.held_out`).

When the test split's halves select and report, :func:`swapped_images` gives the other fold
(select on the second half, report on the first): the mean of the two folds' reports
(cross-fitting) judges a search procedure on every test image, with no image both choosing and
reporting, which halves the variance a comparison of methods gets from the report's images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from haq.core.errors import ConfigError
from haq.core.validate import count
from haq.evaluation.evaluators import PolicyKey, policy_key
from haq.evaluation.held_out import Images
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


def pick_images(problem: SearchProblem, select_samples: int = 150) -> tuple[Images, Images]:
    """The images that select and those that report (see the module docstring)."""
    count("select_samples", select_samples)
    n_val, n_test = len(problem.workload.data.val), len(problem.workload.data.test)  # type: ignore[arg-type]
    searched = problem.config.evaluation.val_samples
    if n_val - searched >= select_samples:
        return Images("val", searched, searched + select_samples), Images("test", 0, n_test)
    return Images("test", 0, n_test // 2), Images("test", n_test // 2, n_test)


def swapped_images(problem: SearchProblem, select_samples: int = 150) -> tuple[Images, Images] | None:
    """The other fold of a pick made on the test split's halves (select on the second, report on
    the first); ``None`` when the pick selects on validation images and reports on all the test."""
    select, report = pick_images(problem, select_samples)
    return (report, select) if select.split == "test" else None


def top_distinct(candidates: Sequence[tuple[QuantPolicy, float]], k: int) -> list[int]:
    """Indices of the ``k`` best distinct policies of ``(policy, search reward)`` candidates, best
    first (a policy's first occurrence; ties by position)."""
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
    return top


def pick_final(
    problem: SearchProblem,
    candidates: Sequence[tuple[QuantPolicy, float]],
    k: int = 5,
    select_samples: int = 150,
    images: tuple[Images, Images] | None = None,
) -> Pick:
    """Re-score the ``k`` best distinct ``(policy, search reward)`` candidates on held-out images,
    choose the best there, and report it on the test images (see the module docstring);
    ``images`` (select, report) overrides :func:`pick_images`, e.g. with :func:`swapped_images`."""
    count("k", k)
    select, report = images if images is not None else pick_images(problem, select_samples)
    if not candidates:
        raise ConfigError("pick_final needs at least one evaluated policy")
    top = top_distinct(candidates, k)
    cfg = problem.config
    kind = FULL if cfg.evaluation.kind == MULTI else cfg.evaluation.kind
    selector = problem.held_out(kind, select)
    scored = selector.evaluate_many([candidates[i][0] for i in top])  # one batch: concurrent on a worker pool
    select_rewards = {i: problem.reward(m, selector.reference) for i, m in zip(top, scored)}
    chosen = max(top, key=lambda i: (select_rewards[i], -top.index(i)))
    reporter = problem.held_out(kind, report)
    metrics = reporter.evaluate(candidates[chosen][0])
    reward = problem.reward(metrics, reporter.reference)
    return Pick(chosen, candidates[chosen][0], select_rewards, metrics, reward, str(select), str(report))


__all__ = ["Pick", "pick_final", "pick_images", "swapped_images", "top_distinct"]
