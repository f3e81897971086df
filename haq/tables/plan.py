"""The cheapest (or dearest) way to finish a network from any layer and pair, when a policy's cost
is its layers' costs plus a cost at each boundary between consecutive layers.

A measured CPU table prices a network that way (a precision change between two layers inserts
Quantize / Dequantize work), so the cheapest policy is not every layer at its own cheapest pair:
on one machine the digits CNN's int8 layers were each cheaper than their float ones in
isolation, yet the all-float network was the cheapest (the int8 region's own terms and its
boundaries cost more). A budget that completes a partial policy with each later layer's cheapest
pair then refuses budgets the network can meet. :func:`chain_plan` solves the chain exactly by
dynamic programming, backward from the last layer: for every layer ``i`` and allowed pair ``p``,
the pair of layer ``i + 1`` on the best way to finish from ``(i, p)``. Following those pointers
from any decided prefix gives its best completion, and the completion of the next step starts
with the same pair (Bellman), which is what keeps a projected episode within budget.

Pure numerics on plain mappings; nothing here knows tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from haq.core.errors import ConfigError
from haq.core.types import BitPair

Link = Callable[[int, BitPair, BitPair], float]
"""``link(i, p, q)``: the cost of the boundary in front of layer ``i`` from pair ``p`` (layer
``i - 1``) to pair ``q`` (layer ``i``)."""


@dataclass(frozen=True)
class Plan:
    """Best ways to finish a chain of layers: ``first`` starts the best whole path, and
    ``after[i][p]`` is layer ``i + 1``'s pair on the best way to finish from layer ``i`` at ``p``
    (``after`` has one mapping per layer but the last)."""

    first: BitPair
    after: tuple[Mapping[BitPair, BitPair], ...]

    def rest(self, index: int, pair: BitPair) -> list[BitPair]:
        """The pairs of layers ``index + 1`` .. last on the best way to finish from ``(index, pair)``."""
        out: list[BitPair] = []
        for step in self.after[index:]:
            pair = step[pair]
            out.append(pair)
        return out

    def path(self) -> list[BitPair]:
        """The best whole path."""
        return [self.first, *self.rest(0, self.first)]

    def next_pair(self, decided: Sequence[BitPair]) -> BitPair:
        """The pair that continues ``decided`` (a prefix of layers 0 ..) on its best completion."""
        return self.after[len(decided) - 1][decided[-1]] if decided else self.first


def chain_plan(
    costs: Sequence[Mapping[BitPair, float]],
    allowed: Sequence[Sequence[BitPair]],
    link: Link | None = None,
    dearest: bool = False,
) -> Plan:
    """The :class:`Plan` minimizing (``dearest``: maximizing) the sum of ``costs[i][pair]`` over the
    layers plus ``link`` at every boundary (none: costs are additive), each layer taking one of its
    ``allowed`` pairs. Ties go to the higher widths when minimizing, the lower when maximizing, so
    an additive cheapest plan is every layer's cheapest pair, highest widths on ties."""
    if not costs or len(costs) != len(allowed):
        raise ConfigError(f"a plan needs one set of allowed pairs per layer, got {len(allowed)} for {len(costs)} layers")
    for i, (c, pairs) in enumerate(zip(costs, allowed)):
        missing = [p for p in pairs if p not in c]
        if not pairs or missing:
            raise ConfigError(f"layer {i}: allowed pairs {list(pairs)} must be non-empty and priced (no cost for {missing})")
    sign = -1.0 if dearest else 1.0

    def key(value: float, pair: BitPair) -> tuple[float, int, int]:
        return (sign * value, -sign * pair[0], -sign * pair[1])

    togo = {p: 0.0 for p in allowed[-1]}
    after: list[dict[BitPair, BitPair]] = []
    for i in range(len(costs) - 2, -1, -1):
        nxt = allowed[i + 1]
        ahead = {q: costs[i + 1][q] + togo[q] for q in nxt}
        if link is None:  # the best next pair does not depend on this layer's
            best = min(nxt, key=lambda q: key(ahead[q], q))
            step = {p: best for p in allowed[i]}
            togo = {p: ahead[best] for p in allowed[i]}
        else:
            step, cost = {}, {}
            for p in allowed[i]:
                q = min(nxt, key=lambda q, p=p: key(ahead[q] + link(i + 1, p, q), q))
                step[p], cost[p] = q, ahead[q] + link(i + 1, p, q)
            togo = cost
        after.append(step)
    after.reverse()
    first = min(allowed[0], key=lambda p: key(costs[0][p] + togo[p], p))
    return Plan(first, tuple(after))


__all__ = ["Link", "Plan", "chain_plan"]
