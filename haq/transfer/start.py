"""The policy a transfer predicts best on the new device, before evaluating anything there.

A transfer that reuses its source's evaluations (:mod:`haq.transfer.experience`) knows the exact
reward of every source policy the new environment can reach; but those were found under the old
device's costs, and the new device's best policies are often elsewhere: on Bismo-edge the digits
MLP keeps its accuracy down to half the budget, so the best source policy that fits (found on
Bismo-cloud) scored −0.196 where a from-scratch search's second prior rung already scored −0.175
(``bench/transfer.py``). What carries over is accuracy: the source's evaluations measure how the
model's accuracy falls with its estimated error (:mod:`haq.problem.accuracy_fit`), and the new
table prices any policy. So the candidates a from-scratch search would evaluate first, the
sensitivity allocations at its prior rungs' budgets on the new device (:mod:`haq.search.rungs`),
are scored by that prediction and the new cost, and the best is the zero-shot policy when it is
predicted to beat the best reached source policy's exact reward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from haq.core.types import BitPair
from haq.evaluation.evaluators import PolicyCosts
from haq.evaluation.metrics import PolicyMetrics
from haq.problem.accuracy_fit import AccuracyFit
from haq.problem.allocation import budget_ladder, estimated_error, sensitivity_rungs
from haq.problem.problem import SearchProblem
from haq.problem.reward import accuracy_term, cost_term
from haq.runs.rundir import EpisodeRecord
from haq.transfer.experience import Repriced, reachable

STARTED_FROM = "zero_shot_from"
"""Key of the zero-shot episode's ``extra``: :data:`FROM_PREDICTED` or :data:`FROM_REUSED`
(:attr:`TransferConfig.zero_shot`)."""
FROM_PREDICTED = "predicted"
FROM_REUSED = "reused"
PREDICTED = "predicted_reward"
"""Key of the zero-shot episode's ``extra``: the reward predicted for the best allocation."""
PREDICTED_FRACTION = "predicted_fraction"
"""Key of the zero-shot episode's ``extra``: that allocation's budget fraction."""


@dataclass(frozen=True)
class PredictedStart:
    """A sensitivity allocation on the new device and the reward predicted for it there.

    fraction: the budget fraction it was solved for; points: the distinct estimated errors
    among the evaluated policies the accuracy fit used.
    """

    pairs: tuple[BitPair, ...]
    fraction: float
    predicted: float
    points: int


def accuracy_fit(problem: SearchProblem, records: Sequence[EpisodeRecord]) -> AccuracyFit | None:
    """The fit of the accuracy term on the estimated error over ``records``' distinct policies
    (same model and evaluator as ``problem``: the caller checks); ``None`` without a sensitivity
    estimate or a policy of this model."""
    if problem.sensitivity is None:
        return None
    reference, cfg = problem.evaluator.reference, problem.config.reward
    seen: set[tuple[BitPair, ...]] = set()
    errors: list[float] = []
    terms: list[float] = []
    for record in records:
        pairs = record.pairs(problem.layer_names)
        if pairs is None or pairs in seen:
            continue
        seen.add(pairs)
        errors.append(estimated_error(problem.sensitivity, dict(zip(problem.layer_names, pairs))))
        terms.append(accuracy_term(record.metrics, reference, cfg))
    return AccuracyFit.fit(errors, terms) if errors else None


def predicted_start(problem: SearchProblem, records: Sequence[EpisodeRecord], rungs: int, floor: float) -> PredictedStart | None:
    """The sensitivity allocation at ``rungs`` (at least 2) budgets from the full one down to
    ``floor`` x it (the prior rungs' ladder) with the best predicted reward on ``problem``'s
    device, among those the environment reaches whose estimated error the fit covers; ``None``
    when there is none."""
    fit = accuracy_fit(problem, records)
    if fit is None or problem.sensitivity is None:
        return None
    costs = PolicyCosts(problem.workload.layers, problem.table, problem.table)
    cfg, target = problem.config.reward, problem.budget.target
    ladder = budget_ladder(problem.budget_model, rungs, floor)
    best: PredictedStart | None = None
    for budget, pairs in sensitivity_rungs(problem.budget_model, problem.sensitivity, ladder):
        accuracy = fit.predict(estimated_error(problem.sensitivity, dict(zip(problem.layer_names, pairs))))
        if accuracy is None or not reachable(problem, pairs):
            continue
        latency, energy, size = costs.costs(problem.policy(pairs))
        predicted = accuracy - cost_term(PolicyMetrics(0.0, None, latency, energy, size), problem.budget, cfg)
        if best is None or predicted > best.predicted:
            best = PredictedStart(pairs, budget / target, predicted, len(fit.errors))
    return best


@dataclass(frozen=True)
class ZeroShot:
    """The policy a reusing transfer's actor is fitted to, and what its zero-shot episode notes."""

    pairs: tuple[BitPair, ...]
    extra: dict[str, Any]
    description: str


def choose_zero_shot(predicted: PredictedStart | None, best: Repriced | None) -> ZeroShot | None:
    """The predicted allocation when it is predicted to beat the best reused policy's exact
    reward (or nothing was reused), else that policy; ``None`` with neither."""
    noted: dict[str, Any] = {} if predicted is None else {PREDICTED: predicted.predicted, PREDICTED_FRACTION: predicted.fraction}
    if predicted is not None and (best is None or predicted.predicted > best.scored.reward):
        than = "" if best is None else f" (the best reused: {best.scored.reward:+.4f})"
        return ZeroShot(
            predicted.pairs,
            {**noted, STARTED_FROM: FROM_PREDICTED},
            f"the sensitivity allocation at {predicted.fraction:.3f} x budget, predicted {predicted.predicted:+.4f} "
            f"from {predicted.points} evaluated errors{than}",
        )
    if best is None:
        return None
    return ZeroShot(
        best.pairs,
        {**noted, STARTED_FROM: FROM_REUSED},
        f"the best of them ({best.scored.reward:+.4f} here, source episode {best.source_episode})",
    )


__all__ = [
    "FROM_PREDICTED",
    "FROM_REUSED",
    "PREDICTED",
    "PREDICTED_FRACTION",
    "STARTED_FROM",
    "PredictedStart",
    "ZeroShot",
    "accuracy_fit",
    "choose_zero_shot",
    "predicted_start",
]
