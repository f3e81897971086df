"""The final pick of a run, made honestly: rewards on the search's few hundred images favour lucky
policies, so the top ``k`` of a run are re-scored on held-out images the search never saw before
one is chosen, and the chosen policy is reported on the test split. The policies the run's agent
proposed most often are re-scored beside them (``repeats``): the agent's settled choice, which a
lucky top of the log can crowd out of the top ``k``. With ``defer`` the pick keeps the most
proposed one unless another candidate beats it on the held-out images by more than that many
images' worth (:func:`deferring`).

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

The choosing images are held out from the search in images but not, by default, in the
evaluator's randomness: the choosing re-score fine-tunes, calibrates and attacks with the
workload's seed, as the search did, so a policy whose fine-tune was lucky under that seed stays
lucky there. With ``select_seeds`` the candidates are re-scored under that many other seeds
(:func:`choosing_seeds`: 201, 202, ..., none of them a report seed) and compared by their mean.

The report may average over evaluator seeds (``report_seeds``): the full evaluator fine-tunes,
calibrates and attacks with the workload's seed, and the search and the re-score use that seed
too, so the chosen policy carries the fine-tune it was lucky with. On the digits MLP a policy
chosen so scored 0.4 less, on average, under nine other seeds (``bench/rejudge.py``). A user
fine-tunes the chosen policy afresh (``haq evaluate``), so the mean over seeds is what they can
expect; the own seed's figure is kept beside it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence

from haq.core.errors import ConfigError
from haq.core.validate import count, finite
from haq.evaluation.config import SEEDED
from haq.evaluation.evaluators import PolicyKey, policy_key
from haq.evaluation.held_out import Images
from haq.evaluation.metrics import PolicyMetrics
from haq.problem.fidelity import FULL
from haq.problem.problem import MULTI, SearchProblem
from haq.problem.reward import image_reward
from haq.quant import QuantPolicy

REPORT_SEED_START = 101
"""The evaluator seeds a report adds after the workload's own: 101, 102, ..."""
SELECT_SEED_START = 201
"""The evaluator seeds the choosing images are scored under with ``select_seeds``: 201, 202, ...
(apart from every report seed, so a judge's seeds never also chose)."""


def report_seeds(own: int, n: int) -> tuple[int, ...]:
    """The workload's own evaluator seed, then ``n - 1`` others."""
    count("report seeds", n)
    return (own, *range(REPORT_SEED_START, REPORT_SEED_START + n - 1))


def choosing_seeds(own: int, n: int) -> tuple[int, ...]:
    """The evaluator seeds the choosing images are scored under: the workload's own when ``n`` is
    0, otherwise ``n`` seeds it was not searched or reported under."""
    count("select seeds", n, 0)
    if n == 0:
        return (own,)
    return tuple(s for s in range(SELECT_SEED_START, SELECT_SEED_START + n + 1) if s != own)[:n]


@dataclass(frozen=True)
class SeedReport:
    """The chosen policy on the report images with the evaluator seeded ``seed``."""

    seed: int
    metrics: PolicyMetrics
    reward: float


@dataclass(frozen=True)
class Pick:
    """The outcome of :func:`pick_final`.

    index: position (in the candidates given) of the chosen policy.
    select_rewards: reward of each re-scored candidate (:func:`pick_candidates`) on the selection
        images, by candidate index (the mean over ``select_seeds``).
    test: the chosen policy's metrics on the report images under the workload's own seed.
    test_reward: its reward there, the mean over the report's evaluator seeds.
    select_images / test_images: where and how many images each stage used.
    by_seed: the report under each evaluator seed, the workload's own first.
    settled: position of the run's most often proposed policy when the pick deferred to it
        (``defer``; :func:`deferring`), whether or not it was chosen; ``None`` otherwise.
    select_seeds: the evaluator seeds the selection images were scored under
        (:func:`choosing_seeds`; the workload's own alone for an evaluator that does not use its seed).
    """

    index: int
    policy: QuantPolicy
    select_rewards: dict[int, float]
    test: PolicyMetrics
    test_reward: float
    select_images: str
    test_images: str
    by_seed: tuple[SeedReport, ...] = ()
    settled: int | None = None
    select_seeds: tuple[int, ...] = ()


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


def most_repeated(policies: Sequence[QuantPolicy], m: int) -> list[int]:
    """Indices (first proposals) of the ``m`` distinct policies proposed most often, each at least
    twice (repeats are cache hits, logged like any episode); ties go to the earlier first proposal."""
    first: dict[PolicyKey, int] = {}
    times: dict[PolicyKey, int] = {}
    for i, policy in enumerate(policies):
        key = policy_key(policy)
        first.setdefault(key, i)
        times[key] = times.get(key, 0) + 1
    ranked = sorted((key for key in times if times[key] >= 2), key=lambda key: (-times[key], first[key]))
    return [first[key] for key in ranked[:m]]


def pick_candidates(candidates: Sequence[tuple[QuantPolicy, float]], k: int, repeats: int = 0) -> list[int]:
    """What the pick re-scores: the ``k`` best distinct candidates by search reward, then those of
    the ``repeats`` most often proposed that are not among them. Why the second: a policy the agent
    keeps proposing is what its learning settled on from every reward it saw, while the top of the
    log is partly the luck of one evaluation each; on the digits CNN the objective agent settles on
    allocations that mostly sit below the top 5 by search reward (greedy's first-fit one ranked
    11th to 32nd of a run)."""
    top = top_distinct(candidates, k)
    keys = {policy_key(candidates[i][0]) for i in top}
    return top + [i for i in most_repeated([c[0] for c in candidates], repeats) if policy_key(candidates[i][0]) not in keys]


def settled_among(candidates: Sequence[tuple[QuantPolicy, float]], top: Sequence[int]) -> int | None:
    """Which of ``top`` (indices into ``candidates``) holds the run's most often proposed policy:
    ``None`` when no policy was proposed twice. By policy, not index: the most repeated policy's
    first proposal and the index :func:`top_distinct` took for it differ when its rewards do."""
    most = most_repeated([c[0] for c in candidates], 1)
    if not most:
        return None
    key = policy_key(candidates[most[0]][0])
    return next((i for i in top if policy_key(candidates[i][0]) == key), None)


def deferring(top: Sequence[int], select_rewards: dict[int, float], settled: int | None, margin: float) -> int:
    """The best of ``top`` on the selection images, unless it beats the ``settled`` candidate (the
    run's most often proposed policy) there by ``margin`` or less: then the settled one. Why: on a
    few hundred images rewards closer than a couple of images' worth are told apart by chance, and
    the best of several such draws is the luckiest, while the settled policy is what the agent
    learned from every reward of the run."""
    best = max(top, key=lambda i: (select_rewards[i], -top.index(i)))
    if settled is None or select_rewards[best] - select_rewards[settled] > margin:
        return best
    return settled


def pick_final(
    problem: SearchProblem,
    candidates: Sequence[tuple[QuantPolicy, float]],
    k: int = 5,
    select_samples: int = 150,
    images: tuple[Images, Images] | None = None,
    seeds: int = 1,
    repeats: int = 0,
    defer: float = 0.0,
    select_seeds: int = 0,
) -> Pick:
    """Re-score the ``k`` best distinct ``(policy, search reward)`` candidates and the ``repeats``
    most often proposed (:func:`pick_candidates`) on held-out images, choose the best there (or,
    with ``defer``, :func:`deferring`), and report it on the test images under ``seeds`` evaluator
    seeds (one for an evaluator that does not use its seed; see the module docstring); with
    ``select_seeds``, the selection scores are means over that many seeds other than the
    workload's (:func:`choosing_seeds`); ``images`` (select, report) overrides :func:`pick_images`,
    e.g. with :func:`swapped_images`."""
    count("k", k)
    count("repeats", repeats, 0)
    finite("defer", defer, 0.0)
    own, *others = report_seeds(problem.workload.config.seed, seeds)
    choosing = choosing_seeds(own, select_seeds)
    select, report = images if images is not None else pick_images(problem, select_samples)
    if not candidates:
        raise ConfigError("pick_final needs at least one evaluated policy")
    top = pick_candidates(candidates, k, max(repeats, 1) if defer else repeats)  # a settled policy is scored to be deferred to
    cfg = problem.config
    kind = FULL if cfg.evaluation.kind == MULTI else cfg.evaluation.kind
    if kind not in SEEDED:
        others, choosing = [], (own,)  # its score is the same under any seed
    by_seed = []
    for seed in choosing:
        selector = problem.held_out(kind, select, None if seed == own else seed)
        scored = selector.evaluate_many([candidates[i][0] for i in top])  # one batch: concurrent on a worker pool
        by_seed.append([problem.reward(m, selector.reference) for m in scored])
    select_rewards = {i: statistics.mean(rewards[j] for rewards in by_seed) for j, i in enumerate(top)}
    anchor = settled_among(candidates, top) if defer else None
    chosen = deferring(top, select_rewards, anchor, defer * image_reward(cfg.reward, select.count))
    reports = []
    for seed in (None, *others):  # None: the workload's own, the evaluator the search's pool already holds
        reporter = problem.held_out(kind, report, seed)
        metrics = reporter.evaluate(candidates[chosen][0])
        reports.append(SeedReport(own if seed is None else seed, metrics, problem.reward(metrics, reporter.reference)))
    reward = statistics.mean(r.reward for r in reports)
    return Pick(
        chosen,
        candidates[chosen][0],
        select_rewards,
        reports[0].metrics,
        reward,
        str(select),
        str(report),
        tuple(reports),
        anchor,
        choosing,
    )


__all__ = [
    "REPORT_SEED_START",
    "SELECT_SEED_START",
    "Pick",
    "SeedReport",
    "choosing_seeds",
    "deferring",
    "most_repeated",
    "pick_candidates",
    "pick_final",
    "pick_images",
    "report_seeds",
    "settled_among",
    "swapped_images",
    "top_distinct",
]
