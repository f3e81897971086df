"""The bit-allocation problem solved from sensitivities: per layer, the allowed (w, a) pairs
with their budget-metric cost (from the search's :class:`~haq.problem.budget.BudgetModel`, so
every solver sees exactly the choices and budget the environment sees) and their estimated
error (from :mod:`haq.problem.sensitivity`). The ILP and greedy baselines search it, and the
agent's action prior (:func:`sensitivity_prior`) starts from its optimum at the full budget or,
with prior rungs, at the rung of :func:`sensitivity_rungs` that scored best.

Costs are additive per layer here (what an integer program can take). The budget itself is
measured on the whole policy (``BudgetModel.policy_cost``: the table's ``policy_cost``, which
adds precision-boundary costs and fitted corrections on CPU tables); :func:`fit_budget` re-costs
a solution that way and steps it down until it fits, so every policy a baseline reports is
within budget by the same measure the environment enforces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from haq.core.errors import ConfigError
from haq.core.types import BitPair
from haq.problem.budget import BudgetModel
from haq.problem.sensitivity import Sensitivity
from haq.problem.solvers import Choice, cheaper_step, choice_error, solve_ilp


@dataclass(frozen=True)
class ChoiceProblem:
    """Per-layer options (pairs, costs, errors) and the budget, in layer execution order."""

    pairs: tuple[tuple[BitPair, ...], ...]
    costs: tuple[np.ndarray, ...]
    errors: tuple[np.ndarray, ...]
    budget: float

    def assignment(self, choice: Choice) -> tuple[BitPair, ...]:
        """The (w, a) pair of every layer that a choice stands for."""
        return tuple(p[k] for p, k in zip(self.pairs, choice))


def choice_problem(model: BudgetModel, sensitivity: Sensitivity) -> ChoiceProblem:
    """Costs from the budget model, errors from the sensitivities (weight + activation term)."""
    errors = []
    for c in model.layers:
        if c.name not in sensitivity.layers:
            raise ConfigError(f"no sensitivity for layer '{c.name}'; estimate it on the same model")
        errors.append(np.array([sensitivity.layers[c.name].error(w, a) for w, a in c.pairs]))
    return ChoiceProblem(
        pairs=tuple(c.pairs for c in model.layers),
        costs=tuple(np.asarray(c.costs, dtype=np.float64) for c in model.layers),
        errors=tuple(errors),
        budget=model.budget.target,
    )


def fit_budget(problem: ChoiceProblem, choice: Choice, model: BudgetModel) -> tuple[Choice, int]:
    """Step ``choice`` down (least error added per cost saved) until the budget model's
    whole-policy cost fits; returns the fitted choice and the number of repair steps taken.

    The steps follow the per-layer costs; where boundaries make the whole-policy cost disagree
    with them (a measured CPU table: int8 layers cheaper alone, the all-float network cheapest),
    they can run out while still over budget, and the budget's cheapest policy (its plan's,
    within budget whenever the budget was accepted) is taken instead."""
    steps = 0
    while not model.fits(model.policy_cost(problem.assignment(choice))):
        nxt = cheaper_step(problem.costs, problem.errors, choice)
        if nxt is None:
            cheapest = model.plan.path()
            if not model.fits(model.policy_cost(cheapest)):
                raise ConfigError(
                    f"even the cheapest policy costs {model.policy_cost(cheapest):.6g} by the table's "
                    f"whole-policy cost, above the budget {problem.budget:.6g}; raise the budget"
                )
            return tuple(pairs.index(p) for pairs, p in zip(problem.pairs, cheapest)), steps + 1
        choice, steps = nxt, steps + 1
    return choice, steps


def sensitivity_prior(model: BudgetModel, sensitivity: Sensitivity) -> tuple[BitPair, ...]:
    """The assignment with the least estimated error within the budget (the ILP's optimum at the
    full budget, stepped down until the whole-policy cost fits): where the agent's actions are
    centred when ``EnvConfig.action_prior`` is ``sensitivity``."""
    return sensitivity_rungs(model, sensitivity, [model.budget.target])[0][1]


def sensitivity_rungs(
    model: BudgetModel, sensitivity: Sensitivity, targets: Sequence[float]
) -> list[tuple[float, tuple[BitPair, ...]]]:
    """The least-error assignment at each budget in ``targets`` (absolute, at most the budget),
    fitted to the whole-policy budget; a target whose answer an earlier one already gave is
    left out, so every rung is a different policy. Why: the reward also pays for a lower cost,
    and only evaluating these points of the estimated accuracy / cost front tells which one it
    prefers."""
    problem = choice_problem(model, sensitivity)
    out: list[tuple[float, tuple[BitPair, ...]]] = []
    for target in targets:
        pairs = problem.assignment(least_error_choice(problem, model, target))
        if all(pairs != seen for _, seen in out):
            out.append((float(target), pairs))
    return out


def least_error_choice(problem: ChoiceProblem, model: BudgetModel, target: float) -> Choice:
    """The least-error choice within ``target`` (at most the budget), fitted to the whole-policy budget."""
    choice = solve_ilp(problem.costs, problem.errors, min(target, problem.budget))
    if choice is None:
        choice = tuple(int(np.argmin(c)) for c in problem.costs)
    return fit_budget(problem, choice, model)[0]


def estimated_error(sensitivity: Sensitivity, policy: Mapping[str, BitPair]) -> float:
    """A policy's estimated error (its layers' sensitivities summed, what the ILP minimizes), from
    its (w, a) pair per layer name; it depends on the model alone, not on the device."""
    return float(sum(sensitivity.error(name, int(w), int(a)) for name, (w, a) in policy.items()))


def least_cost_at_error(
    model: BudgetModel, sensitivity: Sensitivity, error: float, steps: int = 10
) -> tuple[float, tuple[BitPair, ...]]:
    """The budget fraction and allocation of :func:`sensitivity_rungs` at the least budget whose
    allocation's estimated error is at most ``error`` (bisection over the fraction, ``steps``
    halvings between the cheapest policy and the full budget); the full budget's when even that
    one's is higher. The least-error allocation's error does not rise with the budget, so the
    bisection keeps the lower end above ``error`` and the upper end at or below it."""
    problem = choice_problem(model, sensitivity)
    top = model.budget.target

    def solved(fraction: float) -> Choice:
        return least_error_choice(problem, model, fraction * top)

    hi, best = 1.0, solved(1.0)
    if choice_error(problem.errors, best) > error:
        return hi, problem.assignment(best)
    lo = min(model.budget.cheapest / top, 1.0)
    cheapest = solved(lo)
    if choice_error(problem.errors, cheapest) <= error:
        return lo, problem.assignment(cheapest)
    for _ in range(steps):
        mid = (lo + hi) / 2
        choice = solved(mid)
        if choice_error(problem.errors, choice) <= error:
            hi, best = mid, choice
        else:
            lo = mid
    return hi, problem.assignment(best)


def budget_ladder(model: BudgetModel, n: int, floor: float) -> list[float]:
    """``n`` budgets evenly spaced from the full budget down to ``max(cheapest, floor · budget)``."""
    top = model.budget.target
    low = min(max(model.budget.cheapest, floor * top), top)
    if n == 1:
        return [top]
    return [top - (top - low) * i / (n - 1) for i in range(n)]
