"""Pure numeric solvers over per-layer choice tables: ILP (HiGHS via scipy), greedy descent.

A problem is one array of costs and one of errors per layer (option ``k`` of layer ``l``
costs ``costs[l][k]`` and adds ``errors[l][k]`` to the estimated loss). A *choice* picks one
option index per layer. Nothing here knows about models, tables or bit widths.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from haq.core.errors import ConfigError
from haq.core.native_output import native_stdout_silenced

Choice = tuple[int, ...]


def _check_problem(costs: Sequence[np.ndarray], errors: Sequence[np.ndarray]) -> None:
    if not costs or len(costs) != len(errors):
        raise ConfigError(f"need one cost and one error array per layer, got {len(costs)} and {len(errors)}")
    for i, (c, e) in enumerate(zip(costs, errors)):
        if c.ndim != 1 or c.shape != e.shape or c.size == 0:
            raise ConfigError(f"layer {i}: cost and error arrays must be 1-D, equal length and non-empty")
        if not (np.all(np.isfinite(c)) and np.all(np.isfinite(e))):
            raise ConfigError(f"layer {i}: costs and errors must be finite")


def choice_cost(costs: Sequence[np.ndarray], choice: Choice) -> float:
    """Additive cost of a choice."""
    return float(sum(c[k] for c, k in zip(costs, choice)))


def choice_error(errors: Sequence[np.ndarray], choice: Choice) -> float:
    """Additive estimated error of a choice."""
    return float(sum(e[k] for e, k in zip(errors, choice)))


def solve_ilp(
    costs: Sequence[np.ndarray],
    errors: Sequence[np.ndarray],
    budget: float,
    exclude: Sequence[Choice] = (),
) -> Choice | None:
    """Minimize Σ error subject to Σ cost ≤ budget, one option per layer; ``None`` if infeasible.

    ``exclude`` lists choices to cut off (a "no-good" cut each: at most L−1 of a previous
    solution's variables may be 1), which yields the next-best distinct solution. Costs are
    scaled by the budget and errors by their largest value so HiGHS sees numbers near 1.
    """
    from scipy.optimize import (  # ~2 s to import: only when solving
        Bounds,
        LinearConstraint,
        milp,
    )

    _check_problem(costs, errors)
    for prev in exclude:
        if len(prev) != len(costs) or any(not 0 <= k < c.size for c, k in zip(costs, prev)):
            raise ConfigError(f"excluded choice {prev} does not pick one valid option for each of the {len(costs)} layers")
    sizes = [c.size for c in costs]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n_vars = int(offsets[-1])
    scale_e = max(float(max(np.abs(e).max() for e in errors)), 1e-300)
    scale_c = budget if budget > 0 else 1.0
    objective = np.concatenate(errors) / scale_e
    cost_row = np.concatenate(costs) / scale_c
    one_per_layer = np.zeros((len(costs), n_vars))
    for i in range(len(costs)):
        one_per_layer[i, offsets[i] : offsets[i + 1]] = 1.0
    constraints = [
        LinearConstraint(one_per_layer, 1.0, 1.0),
        LinearConstraint(cost_row[None, :], -np.inf, budget / scale_c),
    ]
    for prev in exclude:
        cut = np.zeros(n_vars)
        cut[[offsets[i] + k for i, k in enumerate(prev)]] = 1.0
        constraints.append(LinearConstraint(cut[None, :], -np.inf, len(costs) - 1))
    with native_stdout_silenced():  # HiGHS's stray debug line (haq.core.native_output)
        res = milp(
            objective,
            integrality=np.ones(n_vars),
            bounds=Bounds(0.0, 1.0),
            constraints=constraints,
            options={"mip_rel_gap": 1e-9, "presolve": True},
        )
    if res.x is None or res.status not in (0, 1):
        return None
    x = np.round(res.x).astype(int)
    return tuple(int(np.flatnonzero(x[offsets[i] : offsets[i + 1]])[0]) for i in range(len(costs)))


def pareto_front(cost: np.ndarray, error: np.ndarray) -> list[int]:
    """Options no other option beats on both cost and error, dearest (most accurate) first.

    Along the returned list cost strictly falls and error strictly rises, so every step down
    the list trades accuracy for cost.
    """
    order = sorted(range(cost.size), key=lambda k: (cost[k], error[k], k))
    front: list[int] = []
    best_error = np.inf
    for k in order:
        if error[k] < best_error and (not front or cost[k] > cost[front[-1]]):
            front.append(k)
            best_error = error[k]
    return front[::-1]


def greedy_path(costs: Sequence[np.ndarray], errors: Sequence[np.ndarray]) -> list[Choice]:
    """Greedy descent from the most accurate choice to the cheapest, one layer step at a time.

    Each step moves the layer whose next cheaper Pareto option adds the least error per unit of
    cost saved (ties: the earliest layer). The path does not depend on any budget, so a larger
    budget stops earlier on it: greedy is monotone in the budget by construction.
    """
    _check_problem(costs, errors)
    fronts = [pareto_front(c, e) for c, e in zip(costs, errors)]
    pos = [0] * len(fronts)
    path = [tuple(f[0] for f in fronts)]
    while True:
        best_layer, best_ratio = -1, np.inf
        for i, f in enumerate(fronts):
            if pos[i] + 1 >= len(f):
                continue
            here, there = f[pos[i]], f[pos[i] + 1]
            ratio = (errors[i][there] - errors[i][here]) / (costs[i][here] - costs[i][there])
            if ratio < best_ratio:
                best_layer, best_ratio = i, ratio
        if best_layer < 0:
            return path
        pos[best_layer] += 1
        path.append(tuple(f[p] for f, p in zip(fronts, pos)))


def cheaper_step(costs: Sequence[np.ndarray], errors: Sequence[np.ndarray], choice: Choice) -> Choice | None:
    """The one-layer change to a strictly cheaper option that adds the least error per unit of
    cost saved (used to repair a choice that a non-additive cost puts over budget); ``None``
    when every layer already sits at its cheapest option."""
    best: tuple[float, int, int] | None = None
    for i, (c, e) in enumerate(zip(costs, errors)):
        here = choice[i]
        for k in range(c.size):
            saved = c[here] - c[k]
            if saved <= 0:
                continue
            ratio = float((e[k] - e[here]) / saved)
            if best is None or ratio < best[0]:
                best = (ratio, i, k)
    if best is None:
        return None
    _, layer, option = best
    return tuple(option if i == layer else k for i, k in enumerate(choice))
