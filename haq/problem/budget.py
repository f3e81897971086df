"""The budget side of the search: which (w, a) pairs each layer may take, what each costs, and
how an action is mapped and projected so the episode always ends within budget.

The budget is measured the way policies are reported: by the table's ``policy_cost`` (which
adds precision-boundary costs and a fitted correction on tables that have them), or by the
weight size. A pair is feasible for the current layer when the decided layers, this pair, and
the cheapest way to finish the network from it cost at most the budget; the pair that continues
the completion checked one step earlier reproduces it, so an episode can never run out of
budget. Where policy costs are not additive (a measured CPU table's boundaries), the cheapest
way to finish is the table's own :meth:`~haq.tables.protocols.ChainPlanner.plan`, not every later
layer at its cheapest pair: that one refused budgets the network could meet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from haq.core import config as serial
from haq.core.errors import ConfigError, TableError
from haq.core.types import BitPair
from haq.core.validate import choice
from haq.problem.config import PROJECTIONS, REPAIRS
from haq.quant import FLOAT_BITS, LayerInfo, QuantPolicy, model_size_bits
from haq.tables.plan import Plan, chain_plan
from haq.tables.protocols import ChainPlanner, DeviceTable

TotalCost = Callable[[Sequence[BitPair]], float]


@dataclass(frozen=True)
class LayerChoices:
    """The (w, a) pairs one layer may take, sorted by (w, a), with their budget-metric costs: the
    layer's cost inside the network on a table that prices it so (a fitted CPU table's per-layer
    terms and call-overhead share: :class:`~haq.tables.protocols.ChainPlanner`; such a cost may be
    below the entry, even negative), else the table's cost of the layer alone, or its weight size."""

    name: str
    pairs: tuple[BitPair, ...]
    costs: tuple[float, ...]

    def cost(self, pair: BitPair) -> float:
        """Cost of one of the layer's pairs."""
        return self.costs[self.pairs.index(pair)]

    @property
    def cheapest(self) -> float:
        """Lowest cost among the pairs."""
        return min(self.costs)

    @property
    def dearest(self) -> float:
        """Highest cost among the pairs."""
        return max(self.costs)


@dataclass(frozen=True)
class Budget:
    """A resolved budget: the target in the metric's units and what is achievable."""

    metric: str
    target: float
    reference: float
    cheapest: float
    dearest: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return serial.to_dict(self)


@dataclass(frozen=True)
class BudgetModel:
    """Per-layer choices, the budget, and the whole-policy cost the budget is measured with."""

    layers: tuple[LayerChoices, ...]
    budget: Budget
    total_cost: TotalCost = field(compare=False, repr=False)
    plan: Plan = field(compare=False, repr=False)
    """The cheapest ways to finish the network from any layer and pair (within the choices)."""

    def min_cost_from(self, index: int) -> float:
        """Cheapest per-layer cost of layers ``index`` .. end (additive; an observation feature)."""
        return float(sum(c.cheapest for c in self.layers[index:]))

    def fallback(self, decided: Sequence[BitPair]) -> BitPair:
        """The pair that continues ``decided`` on its cheapest completion: it fits whenever the
        completion checked one step earlier did (it is that completion)."""
        return self.plan.next_pair(decided)

    def completion_cost(self, decided: Sequence[BitPair], pair: BitPair) -> float:
        """Cost of ``decided`` + ``pair`` + the cheapest way to finish the network from there."""
        return self.total_cost([*decided, pair, *self.plan.rest(len(decided), pair)])

    def policy_cost(self, pairs: Sequence[BitPair]) -> float:
        """Cost of one pair per layer, measured like the budget."""
        return self.total_cost(pairs)

    def fits(self, cost: float) -> bool:
        """Whether ``cost`` is within the budget (relative tolerance 1e-9)."""
        return cost <= self.budget.target * (1 + 1e-9)


def layer_metric_cost(table: DeviceTable, info: LayerInfo, pair: BitPair, metric: str) -> float:
    """Cost of one layer at ``pair``: the table for latency / energy, weight bits for size."""
    if metric == "size":
        bias = info.signature.out_channels * FLOAT_BITS if info.signature.bias else 0
        return float(info.params * pair[0] + bias)
    cost = float(table.layer_cost(info.signature, pair[0], pair[1], metric))
    if not np.isfinite(cost) or cost < 0:
        raise TableError(
            f"table '{table.name}' gives layer '{info.name}' at w{pair[0]}a{pair[1]} an invalid {metric} cost {cost}"
        )
    return cost


def allowed_pairs(table: DeviceTable, info: LayerInfo, min_bits: int, max_bits: int, pin: int | None) -> tuple[BitPair, ...]:
    """The device's supported pairs inside the bit range (only ``(pin, pin)`` for a pinned layer)."""
    supported = sorted({(int(w), int(a)) for w, a in table.supported_bits(info.signature)})
    inside = [p for p in supported if min_bits <= p[0] <= max_bits and min_bits <= p[1] <= max_bits]
    if pin is not None:
        if (pin, pin) not in supported:
            raise ConfigError(f"cannot pin layer '{info.name}' to {pin} bits: table '{table.name}' supports {supported}")
        return ((pin, pin),)
    if not inside:
        raise TableError(
            f"table '{table.name}' supports no (w, a) pair within bits {min_bits}..{max_bits} for layer '{info.name}'; "
            f"it supports {supported}{_float_hint(table, [info], max_bits)}"
        )
    return tuple(inside)


def build_budget_model(
    layers: Sequence[LayerInfo],
    table: DeviceTable,
    metric: str,
    ratio: float,
    absolute: float | None,
    min_bits: int,
    max_bits: int,
    pin_first_last: int | None,
) -> BudgetModel:
    """Resolve choices and budget; refuse a budget below the cheapest achievable cost."""
    if metric != "size" and metric not in table.metrics:
        raise ConfigError(f"table '{table.name}' has no '{metric}' metric; it has {', '.join(table.metrics)} (or use size)")
    table.check_covers(layers)
    pinned = {0, len(layers) - 1} if pin_first_last is not None else set()
    planner = table if metric != "size" and isinstance(table, ChainPlanner) else None
    within = planner.layer_costs_in(layers, metric) if planner is not None else None
    choices = []
    for i, info in enumerate(layers):
        pairs = allowed_pairs(table, info, min_bits, max_bits, pin_first_last if i in pinned else None)
        if within is not None:
            costs = tuple(float(within[i][p]) for p in pairs)
        else:
            costs = tuple(layer_metric_cost(table, info, p, metric) for p in pairs)
        choices.append(LayerChoices(info.name, pairs, costs))
    total = _total_cost_fn(layers, table, metric)
    reference = total([_top_pair(table, info, min_bits, max_bits) for info in layers])
    low, high = (_plan(layers, planner, metric, choices, dearest) for dearest in (False, True))
    cheapest, dearest = total(low.path()), total(high.path())
    target = absolute if absolute is not None else ratio * reference
    if target < cheapest * (1 - 1e-9):
        raise ConfigError(
            f"{metric} budget {target:.6g} is below the cheapest achievable {cheapest:.6g}; achievable range is "
            f"{cheapest:.6g}..{dearest:.6g} "
            f"(ratio {cheapest / reference:.3f}..{dearest / reference:.3f} of uniform {max_bits}-bit)"
            f"{_float_hint(table, layers, max_bits)}"
        )
    return BudgetModel(tuple(choices), Budget(metric, float(target), reference, cheapest, dearest), total, low)


def _plan(
    layers: Sequence[LayerInfo], planner: ChainPlanner | None, metric: str, choices: Sequence[LayerChoices], dearest: bool
) -> Plan:
    """The cheapest (``dearest``) completions within ``choices``: the table's own where it prices
    boundaries (``planner``), else from the choices' additive costs."""
    allowed = [c.pairs for c in choices]
    if planner is not None:
        return planner.plan(layers, allowed, metric, dearest)
    return chain_plan([dict(zip(c.pairs, c.costs)) for c in choices], allowed, None, dearest)


def _total_cost_fn(layers: Sequence[LayerInfo], table: DeviceTable, metric: str) -> TotalCost:
    """Whole-policy cost in the budget metric: the table's ``policy_cost``, or the weight size."""
    names = [layer.name for layer in layers]
    frozen = list(layers)

    def total(pairs: Sequence[BitPair]) -> float:
        policy = QuantPolicy.from_pairs(zip(names, pairs))
        if metric == "size":
            return float(model_size_bits(frozen, policy))
        return float(table.policy_cost(frozen, policy, metric))

    return total


def _float_hint(table: DeviceTable, layers: Sequence[LayerInfo], max_bits: int) -> str:
    """Advice for devices that also run float (CPUs): the default range 2..8 hides that option."""
    if max_bits < FLOAT_BITS and any(FLOAT_BITS in p for layer in layers for p in table.supported_bits(layer.signature)):
        return f"; this device also runs float: use --max-bits {FLOAT_BITS} to let layers stay float"
    return ""


def _top_pair(table: DeviceTable, info: LayerInfo, min_bits: int, max_bits: int) -> BitPair:
    """The highest-precision supported pair in range: what 'uniform max_bits' means on this device."""
    return max(allowed_pairs(table, info, min_bits, max_bits, None))


def map_action(action: np.ndarray, pairs: Sequence[BitPair], center: BitPair | None = None) -> BitPair:
    """Action in [-1, 1]² → the pair it points at: the first coordinate picks among the distinct
    weight widths, the second among the activation widths available with that weight width.

    Without ``center`` the widths split [-1, 1] into equal bins. With a ``center`` (the action
    prior, ``EnvConfig.action_prior``) each axis is stretched piecewise linearly so that 0 lands
    on the centre's bin, -1 on the lowest width and +1 on the highest: every pair stays
    reachable, and an agent whose actions start near 0 starts at the prior.
    """
    u = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    ws = sorted({p[0] for p in pairs})
    w = ws[_bin(float(u[0]), len(ws), None if center is None else _nearest(ws, center[0]))]
    acts = sorted(p[1] for p in pairs if p[0] == w)
    return (w, acts[_bin(float(u[1]), len(acts), None if center is None else _nearest(acts, center[1]))])


def encode_pair(pair: BitPair, pairs: Sequence[BitPair], center: BitPair | None = None) -> np.ndarray:
    """The action in [-1, 1]² at the centre of ``pair``'s bin (inverse of :func:`map_action` with the same ``center``)."""
    ws = sorted({p[0] for p in pairs})
    acts = sorted(p[1] for p in pairs if p[0] == pair[0])
    kw = None if center is None else _nearest(ws, center[0])
    ka = None if center is None else _nearest(acts, center[1])
    return np.array([_unbin(ws.index(pair[0]), len(ws), kw), _unbin(acts.index(pair[1]), len(acts), ka)], dtype=np.float32)


def _nearest(widths: Sequence[int], target: int) -> int:
    """Index of the width closest to ``target`` (the higher one on ties)."""
    return min(range(len(widths)), key=lambda i: (abs(widths[i] - target), -widths[i]))


def _bin(u: float, n: int, k: int | None) -> int:
    """Bin index of ``u`` in [-1, 1] among ``n`` bins; with a centre ``k``, ``u = 0`` is bin ``k``'s middle."""
    if k is None:
        t = (u + 1.0) / 2.0 * n
    elif u <= 0.0:
        t = (k + 0.5) * (u + 1.0)
    else:
        t = (k + 0.5) + (n - k - 0.5) * u
    return min(max(int(t), 0), n - 1)


def _unbin(i: int, n: int, k: int | None) -> float:
    """The ``u`` at the middle of bin ``i`` (inverse of :func:`_bin`)."""
    t = i + 0.5
    if k is None:
        return 2.0 * t / n - 1.0
    if t <= k + 0.5:
        return t / (k + 0.5) - 1.0
    return (t - k - 0.5) / (n - k - 0.5)


def apply_request(requested: BitPair, decided: Sequence[BitPair], model: BudgetModel, projection: str) -> BitPair:
    """The pair the next layer (after ``decided``) gets for ``requested``: under the ``stepwise``
    projection the nearest pair that leaves the rest of the network a way to fit
    (:func:`project`); under a whole-episode repair the request itself, since the repair at the
    end (:func:`settle_episode`) decides what is kept."""
    if projection != "stepwise":
        return requested
    choices = model.layers[len(decided)]
    return project(requested, choices, lambda pair: model.fits(model.completion_cost(decided, pair)), model.fallback(decided))


def settle_episode(applied: Sequence[BitPair], model: BudgetModel, projection: str) -> list[BitPair]:
    """The policy an episode of :func:`apply_request` pairs ends with: as applied under
    ``stepwise`` (already within budget), else repaired by :func:`lower_to_fit`."""
    choice("projection", projection, PROJECTIONS)
    return list(applied) if projection == "stepwise" else lower_to_fit(applied, model, projection)


def project_episode(requests: Sequence[BitPair], model: BudgetModel, projection: str) -> tuple[BitPair, ...]:
    """One pair per layer for a whole episode of requests, exactly as the environment brings it
    within budget: the same mechanism for the agent's episodes and the random baseline's draws."""
    if len(requests) != len(model.layers):
        raise ConfigError(f"{len(requests)} requests for {len(model.layers)} layers; give one (w, a) pair per layer")
    applied: list[BitPair] = []
    for requested in requests:
        applied.append(apply_request(requested, applied, model, projection))
    return tuple(settle_episode(applied, model, projection))


def lower_to_fit(requested: Sequence[BitPair], model: BudgetModel, rule: str) -> list[BitPair]:
    """The whole-policy repair of a projection applied once the episode ends: ``requested`` itself
    when it fits, else the request lowered one supported step at a time (a width at a layer's
    widest) until it fits.

    Repairing after the episode, as HAQ does, rather than spending the budget in layer order
    means no late layer inherits the whole deficit (in an agent's early MobileNetV2 episodes the
    stepwise projection left a median of nine layers before the classifier at 2 bits). ``rule``
    says which layers step down in each round:

    - ``shift`` (HAQ's rule: every layer's bits lowered in turn): every layer above its floor, so
      the request's relative allocation survives and every requested width still counts;
    - ``ceiling``: only the layers at the widest width left, a common ceiling: a request of 8 bits
      everywhere becomes a near-uniform policy (on a full grid within one bit), and a layer asked
      below the ceiling keeps its bits, but every request above it gives the same policy.

    Within a round the layers that save the most go first, so the last round cuts the fewest.
    Uses no sensitivity estimate and no baseline's solution. Where costs are not additive and even
    the lowest widths do not fit, it returns the table's cheapest policy, which always does.
    """
    choice("repair rule", rule, REPAIRS)
    pairs = list(requested)
    while not model.fits(model.policy_cost(pairs)):
        steps = [(i, step) for i, p in enumerate(pairs) if (step := _step_down(p, model.layers[i])) is not None]
        if not steps:
            return list(model.plan.path())
        if rule == "ceiling":
            top = max(max(pairs[i]) for i, _ in steps)
            steps = [(i, step) for i, step in steps if max(pairs[i]) == top]
        steps.sort(key=lambda s: (model.layers[s[0]].cost(s[1]) - model.layers[s[0]].cost(pairs[s[0]]), s[0]))
        for i, step in steps:
            pairs[i] = step
            if model.fits(model.policy_cost(pairs)):
                break
    return pairs


def _step_down(pair: BitPair, choices: LayerChoices) -> BitPair | None:
    """The layer's next pair down from ``pair``: it lowers a width at the pair's widest and raises
    neither, losing the fewest bits (then saving the most, then the larger weight width); None at
    the floor. On a full grid one step lowers one width by one bit."""
    top = max(pair)
    lower = [q for q in choices.pairs if q[0] <= pair[0] and q[1] <= pair[1] and any(q[k] < pair[k] == top for k in (0, 1))]
    return max(lower, key=lambda q: (q[0] + q[1], -choices.cost(q), q)) if lower else None


def project(desired: BitPair, choices: LayerChoices, fits: Callable[[BitPair], bool], fallback: BitPair) -> BitPair:
    """The pair to apply: ``desired`` if it ``fits``; else the fitting pair nearest to it (squared
    distance in bits, dearest on ties) among those that raise neither width; else ``fallback``
    (:meth:`BudgetModel.fallback`, which always fits).

    Nearest, not dearest: on a weight-bound layer the dearest fitting pair keeps the weight bits
    and drops the activations to the floor, which is rarely what the request meant.
    """
    if fits(desired):
        return desired
    fitting = [p for p in choices.pairs if p[0] <= desired[0] and p[1] <= desired[1] and fits(p)]
    if fitting:
        return min(fitting, key=lambda p: ((desired[0] - p[0]) ** 2 + (desired[1] - p[1]) ** 2, -choices.cost(p), p))
    return fallback
