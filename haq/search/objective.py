"""The agent sets the ILP's objective and the solver allocates: an action re-weighs each layer's
estimated error and picks the budget the integer program is solved for.

The ILP baseline wins on information computed before the search, the per-layer sensitivity
(:mod:`haq.problem.sensitivity`), and on an exact allocator for a given error model; what it
cannot do is learn where that error model is wrong. Here one step of the agent decides the whole
policy (:class:`~haq.search.whole_policy.VecWholePolicy`) through that allocator: its action holds
one number per layer with a choice, each scaling the layer's estimated errors by
``exp(span · a)``, and a last one setting the budget solved for, from ``floor`` × the budget
(``a = −1``) to the whole budget (``a = 1``). The solution, solved and stepped down to the
table's whole-policy budget as every sensitivity allocation is
(:func:`~haq.problem.allocation.least_error_choice`), is sent through the environment as the
per-layer actions that map to it, so it is evaluated, logged and projected exactly as any
episode (it already fits, so nothing is lowered).

The agent never sees a baseline's solution and its warm-up draws random objectives, but its
action space contains the ILP's own answers (every weight 1), so a run is judged against the
ILP's as a seeded agent is: by more than the evaluator's noise. Measured in
``bench/search_quality.py --variants rl-alone-objective``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from gymnasium import spaces

from haq.core.types import BitPair, Log
from haq.problem.allocation import ChoiceProblem, choice_problem, fit_budget, least_error_choice
from haq.problem.budget import BudgetModel, encode_pair
from haq.problem.problem import SearchProblem
from haq.problem.reward_sensitivity import reward_sensitivity
from haq.problem.sensitivity import Sensitivity
from haq.problem.solvers import Choice, solve_ilp


@dataclass(frozen=True)
class ObjectiveDecoder:
    """One agent action → the ILP's allocation under the objective it sets → per-layer actions."""

    problem: ChoiceProblem
    model: BudgetModel
    centres: tuple[BitPair | None, ...]
    free: tuple[int, ...]
    span: float
    floor: float
    sensitivity: Sensitivity
    """The estimate whose errors the agent re-weighs (the run records it)."""

    @classmethod
    def build(cls, problem: SearchProblem, span: float, floor: float, log: Log | None = None) -> ObjectiveDecoder:
        """The decoder of ``problem``, with its sensitivity (estimated here if the problem has none;
        ``log`` hears a measured estimate's progress)."""
        sensitivity = problem.sensitivity or reward_sensitivity(
            problem.config, problem.workload, log=log, pool=problem.pool, store=problem.sensitivity_store
        )
        model = problem.budget_model
        centres = tuple(problem.prior) if problem.prior is not None else (None,) * len(model.layers)
        free = tuple(i for i, c in enumerate(model.layers) if len(c.pairs) > 1)
        low = max(floor, model.budget.cheapest / model.budget.target)
        return cls(choice_problem(model, sensitivity), model, centres, free, span, min(low, 1.0), sensitivity)

    @property
    def action_space(self) -> spaces.Box:
        """One error weight per layer with a choice, then the budget fraction."""
        return spaces.Box(-1.0, 1.0, (len(self.free) + 1,), np.float32)

    def policy(self, action: np.ndarray) -> tuple[BitPair, ...]:
        """The least-error allocation under the re-weighed errors at the budget ``action`` sets."""
        weighed, target = self._objective(action)
        return weighed.assignment(least_error_choice(weighed, self.model, target))

    def alternative(
        self, action: np.ndarray, taken: Sequence[tuple[BitPair, ...]]
    ) -> tuple[tuple[BitPair, ...], tuple[BitPair, ...]] | None:
        """The least-error allocation under ``action``'s objective and budget among those not in
        ``taken`` (a no-good cut each, as the ILP baseline's ladder excludes its earlier solutions),
        as (the solver's answer, that answer fitted to the whole-policy budget); ``None`` when every
        allocation within the budget is taken. The fitted one can be a taken policy (fitting steps
        down to it): the caller cuts the solver's answer off too and asks again."""
        weighed, target = self._objective(action)
        cuts = [c for c in (self._choice(p) for p in taken) if c is not None]
        choice = solve_ilp(weighed.costs, weighed.errors, min(target, weighed.budget), exclude=cuts)
        if choice is None:
            return None
        return weighed.assignment(choice), weighed.assignment(fit_budget(weighed, choice, self.model)[0])

    def _objective(self, action: np.ndarray) -> tuple[ChoiceProblem, float]:
        """The problem with ``action``'s error weights, and the budget it is solved for."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        weights = np.ones(len(self.problem.errors))
        weights[list(self.free)] = np.exp(self.span * a[:-1])
        errors = tuple(e * w for e, w in zip(self.problem.errors, weights))
        target = self.model.budget.target * (self.floor + (1.0 - self.floor) * (a[-1] + 1.0) / 2.0)
        return dataclasses.replace(self.problem, errors=errors), target

    def _choice(self, pairs: tuple[BitPair, ...]) -> Choice | None:
        """The option index of each layer's pair; ``None`` for a policy outside the options."""
        if len(pairs) != len(self.problem.pairs) or any(p not in options for p, options in zip(pairs, self.problem.pairs)):
            return None
        return tuple(options.index(p) for p, options in zip(pairs, self.problem.pairs))

    def layer_actions(self, action: np.ndarray) -> np.ndarray:
        """The environment's per-layer actions that map to :meth:`policy` (each pair's bin centre)."""
        return self.encode(self.policy(action))

    def encode(self, pairs: tuple[BitPair, ...]) -> np.ndarray:
        """The environment's per-layer actions that map to ``pairs`` (each pair's bin centre)."""
        return np.stack([encode_pair(p, c.pairs, k) for p, c, k in zip(pairs, self.model.layers, self.centres)])


__all__ = ["ObjectiveDecoder"]
