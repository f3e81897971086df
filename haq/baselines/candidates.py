"""Candidate assignments of each baseline, before any of them is evaluated.

Every generator returns at most ``n`` candidates, best guess first, all within budget as the
environment measures it (``BudgetModel.policy_cost``, the table's whole-policy cost). The caller
evaluates them and keeps the best reward, exactly as a search keeps its best episode, so
"n evaluations" means the same thing for every method.

* uniform: every (w, a) pair all free layers support within budget, highest precision first.
* random: each layer's action drawn uniformly in [-1, 1]² and mapped and brought within budget
  exactly as the environment does under the problem's projection (HAQ's warm-up episodes),
  seeded; repeats are kept (one per draw).
* greedy: descend from the most accurate choice, lowering the layer that adds the least
  estimated error per unit of (per-layer) cost saved, until the whole policy fits.
* ilp: HAWQ-V3's integer program (minimum Σ estimated error s.t. Σ per-layer cost ≤ budget),
  solved by HiGHS through ``scipy.optimize.milp``, then stepped down if the whole-policy cost
  (precision boundaries on CPU tables) puts it over budget.

Greedy and ILP answer "the most accurate policy for a budget". Their first candidate is that
answer for the full budget; the others are cheaper points of the estimated accuracy/cost front
(down to ``floor`` × budget: further points of greedy's path, the ILP solved for a ladder of
smaller budgets), because the reward also pays for a lower cost and only an evaluation can tell
which point the reward prefers. The ILP excludes every solution it already returned, so each
rung adds a new policy.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

from haq.core.errors import ConfigError
from haq.core.types import BitPair
from haq.problem.allocation import ChoiceProblem, budget_ladder, choice_problem, fit_budget
from haq.problem.budget import BudgetModel, map_action, project_episode
from haq.problem.sensitivity import Sensitivity
from haq.problem.solvers import Choice, choice_error, greedy_path, solve_ilp
from haq.runs.candidates import Candidate

METHODS = ("uniform", "random", "greedy", "ilp")


def uniform_candidates(model: BudgetModel, n: int) -> list[Candidate]:
    """Uniform assignments within budget, highest precision first (by the narrower of w and a,
    then the wider); pinned layers keep their pinned pair."""
    free = [set(c.pairs) for c in model.layers if len(c.pairs) > 1]
    shared = set.intersection(*free) if free else {model.layers[0].pairs[0]}
    fitting = []
    for pair in sorted(shared, key=lambda p: (-min(p), -sum(p), -p[0])):
        pairs = tuple(pair if pair in c.pairs else c.pairs[0] for c in model.layers)
        if model.fits(model.policy_cost(pairs)):
            fitting.append(Candidate(pairs, {"method": "uniform", "uniform_bits": list(pair)}))
    if not fitting:
        raise ConfigError(
            f"no uniform (w, a) pair fits the {model.budget.metric} budget {model.budget.target:.6g}; "
            f"the achievable range is {model.budget.cheapest:.6g}..{model.budget.dearest:.6g} with mixed precision"
        )
    return fitting[:n]


def random_candidates(model: BudgetModel, n: int, rng: np.random.Generator, projection: str) -> list[Candidate]:
    """``n`` random assignments under ``projection`` (``EnvConfig.projection``; repeats kept: one
    per draw, like warm-up episodes)."""
    return [Candidate(random_assignment(model, rng, projection), {"method": "random", "draw": i}) for i in range(n)]


def random_assignment(model: BudgetModel, rng: np.random.Generator, projection: str) -> tuple[BitPair, ...]:
    """One episode of uniformly random actions, brought within budget as the environment does."""
    requests = [map_action(rng.uniform(-1.0, 1.0, size=2), choices.pairs) for choices in model.layers]
    return project_episode(requests, model, projection)


def greedy_candidates(model: BudgetModel, sensitivity: Sensitivity, n: int, floor: float) -> list[Candidate]:
    """Greedy sensitivity descent: where it first fits the budget, then up to ``n − 1`` further
    points of its path down to ``floor`` × budget, evenly spread along the path."""
    problem = choice_problem(model, sensitivity)
    path = greedy_path(problem.costs, problem.errors)
    costs = [model.policy_cost(problem.assignment(c)) for c in path]
    first = next((i for i, c in enumerate(costs) if model.fits(c)), len(path) - 1)
    low = max(model.budget.cheapest, floor * model.budget.target)
    rungs = [i for i in range(first, len(path)) if i == first or costs[i] >= low * (1 - 1e-9)]
    picks = sorted({rungs[round(j * (len(rungs) - 1) / max(n - 1, 1))] for j in range(n)}) if len(rungs) > n else rungs
    return _distinct(((problem, path[i], {"method": "greedy", "path_step": i}) for i in picks), model, n)


def ilp_candidates(model: BudgetModel, sensitivity: Sensitivity, n: int, floor: float) -> list[Candidate]:
    """The ILP optimum at each budget of the ladder, excluding solutions already found."""
    problem = choice_problem(model, sensitivity)
    found: list[Choice] = []

    def solutions() -> Iterator[tuple[ChoiceProblem, Choice, dict[str, Any]]]:
        for target in budget_ladder(model, n, floor):
            choice = solve_ilp(problem.costs, problem.errors, target, exclude=found)
            if choice is not None:
                found.append(choice)
                yield problem, choice, {"method": "ilp", "ladder_budget": target}

    out = _distinct(solutions(), model, n)
    if not out:
        raise ConfigError(
            f"the ILP found no policy within the {model.budget.metric} budget {model.budget.target:.6g} "
            f"(achievable {model.budget.cheapest:.6g}..{model.budget.dearest:.6g})"
        )
    return out


def _distinct(items: Iterable[tuple[ChoiceProblem, Choice, dict[str, Any]]], model: BudgetModel, n: int) -> list[Candidate]:
    """Fit each solution to the whole-policy budget; keep the first ``n`` distinct assignments."""
    seen: set[tuple[BitPair, ...]] = set()
    out: list[Candidate] = []
    for problem, choice, meta in items:
        fitted, repairs = fit_budget(problem, choice, model)
        pairs = problem.assignment(fitted)
        if pairs in seen:
            continue
        seen.add(pairs)
        out.append(Candidate(pairs, {**meta, "predicted_error": choice_error(problem.errors, fitted), "repair_steps": repairs}))
        if len(out) >= n:
            break
    return out
