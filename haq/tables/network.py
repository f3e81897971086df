"""One network's costs on one table, precompiled so the search can price a policy in microseconds.

:class:`NetworkCosts` resolves every layer's signature once into a ``{(w, a): cost}`` dict per
metric, every boundary into its transition costs, and the network's correction; pricing a
policy is then a few dict look-ups per layer. ``cost_range`` is exact even with boundary costs:
a Viterbi pass over the layer chain finds the cheapest and the dearest achievable policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from haq.core.errors import PolicyError, TableError
from haq.core.types import BitPair
from haq.quant.discovery import LayerInfo
from haq.quant.policy import QuantPolicy
from haq.quant.primitives import FLOAT_BITS
from haq.tables.plan import Plan, chain_plan
from haq.tables.schema import Correction, Transition, TransitionRule

LayerCosts = Mapping[BitPair, float]
Rules = Mapping[tuple[BitPair, BitPair, str, str], TransitionRule]
"""Boundary rules by (producer pair, consumer pair, consumer op kind or "" for any, what the
boundary passes on the way: "" for the boundary itself, "maxpool" for the extra cost of a
max-pool in front of the consumer)."""
Grid = list[list[float | None]]  # grid[w][a]: cost, None where the device does not run (w, a)


@dataclass(frozen=True)
class Boundary:
    """The boundary in front of layer ``index``: costs of precision changes there, per metric."""

    index: int
    elems: int
    exact: Mapping[tuple[BitPair, BitPair], Transition]
    op: str = ""
    """The consumer layer's op kind: a rule keyed by it wins over the rule for any consumer."""
    pool_elems: int = 0
    """Elements entering the max-pool in front of the consumer (0: none), priced by a ``maxpool`` rule."""

    def cost(self, src: BitPair, dst: BitPair, metric: str, rules: Rules) -> float:
        """Cost of going from ``src`` to ``dst`` here (0 when equal or unknown to the table)."""
        if src == dst:
            return 0.0
        pool = rules.get((src, dst, "", "maxpool")) if self.pool_elems else None
        extra = pool.cost(metric, self.pool_elems) if pool is not None else 0.0
        t = self.exact.get((src, dst))
        if t is not None:
            value = t.latency_ms if metric == "latency" else t.energy_mj
            return float(value or 0.0) + extra
        rule = rules.get((src, dst, self.op, "")) or rules.get((src, dst, "", ""))
        return (rule.cost(metric, self.elems) if rule is not None else 0.0) + extra


class NetworkCosts:
    """Precompiled costs of ``layers`` (in execution order) on one table."""

    def __init__(
        self,
        table_name: str,
        layers: Sequence[LayerInfo],
        per_layer: Mapping[str, Sequence[LayerCosts]],
        boundaries: Sequence[Boundary],
        rules: Rules,
        corrections: Mapping[str, Correction],
    ) -> None:
        self.table_name = table_name
        self.layers = tuple(layers)
        self.names = tuple(layer.name for layer in layers)
        self._per_layer = {m: tuple(v) for m, v in per_layer.items()}
        self._grids = {m: tuple(_grid(d) for d in v) for m, v in self._per_layer.items()}
        self._boundaries = tuple(boundaries)
        self._rules = dict(rules)
        self._corrections = dict(corrections)
        self.graph_aware = bool(self._boundaries and (rules or any(b.exact for b in self._boundaries)))
        self._ranges: dict[str, tuple[float, float]] = {}

    @property
    def metrics(self) -> tuple[str, ...]:
        """Metrics this network can be priced in."""
        return tuple(self._per_layer)

    def supported_bits(self, index: int) -> list[BitPair]:
        """(w, a) pairs the device runs for layer ``index``, sorted."""
        return sorted(self._per_layer["latency"][index])

    def layer_costs(self, index: int, metric: str = "latency") -> LayerCosts:
        """``{(w, a): cost}`` of layer ``index`` alone (without boundaries)."""
        return self._costs(metric)[index]

    def correction(self, metric: str = "latency") -> Correction | None:
        """The per-network correction the table holds for this network, if any."""
        return self._corrections.get(metric)

    def policy_cost(self, policy: QuantPolicy, metric: str = "latency") -> float:
        """Cost of the whole network under ``policy`` (graph-aware where the table knows how)."""
        rows = self._grid(metric)
        try:
            chosen = list(map(policy.layers.__getitem__, self.names))
        except KeyError as exc:
            raise PolicyError(
                f"policy has no bits for layer '{exc.args[0]}'; it must cover all {len(self.names)} layers"
            ) from None
        try:
            total = sum([row[b.w_bits][b.a_bits] for row, b in zip(rows, chosen)])
        except TypeError:  # None: a pair the device does not run
            i = next(i for i, (row, b) in enumerate(zip(rows, chosen)) if row[b.w_bits][b.a_bits] is None)
            raise TableError(self._unsupported(i, (chosen[i].w_bits, chosen[i].a_bits))) from None
        if self.graph_aware:
            total += self._boundary_cost([(b.w_bits, b.a_bits) for b in chosen], metric)
        return self._corrected(total, metric)

    def bits_cost(self, bits: Sequence[BitPair], metric: str = "latency") -> float:
        """Cost under per-layer ``(w, a)`` pairs given in layer order."""
        per = self._costs(metric)
        if len(bits) != len(per):
            raise PolicyError(f"got bits for {len(bits)} layers, the network has {len(per)}")
        try:
            total = sum([d[b] for d, b in zip(per, bits)])
        except (KeyError, TypeError):
            i = next(i for i, (d, b) in enumerate(zip(per, bits)) if not isinstance(b, tuple) or b not in d)
            raise TableError(self._unsupported(i, bits[i])) from None
        if self.graph_aware:
            total += self._boundary_cost(bits, metric)
        return self._corrected(total, metric)

    def _boundary_cost(self, bits: Sequence[BitPair], metric: str) -> float:
        return sum(b.cost(bits[b.index - 1], bits[b.index], metric, self._rules) for b in self._boundaries)

    def _corrected(self, total: float, metric: str) -> float:
        corr = self._corrections.get(metric)
        return corr.scale * total + corr.offset if corr is not None else float(total)

    def cost_range(self, metric: str = "latency") -> tuple[float, float]:
        """Cheapest and dearest achievable cost over every layer's supported bits (memoized)."""
        if metric not in self._ranges:
            allowed = [sorted(d) for d in self._costs(metric)]
            lo, hi = (self.bits_cost(self.plan(allowed, metric, dearest).path(), metric) for dearest in (False, True))
            self._ranges[metric] = (lo, hi)
        return self._ranges[metric]

    def plan(self, allowed: Sequence[Sequence[BitPair]], metric: str = "latency", dearest: bool = False) -> Plan:
        """The cheapest (``dearest``: dearest) ways to finish the network from any layer and pair of
        ``allowed`` (one sequence per layer), boundaries included (:func:`haq.tables.plan.chain_plan`).
        A correction is a positive affine map of the sum, so it changes no choice."""
        per = self._costs(metric)
        if not self.graph_aware:
            return chain_plan(per, allowed, None, dearest)
        boundary = {b.index: b for b in self._boundaries}

        def link(i: int, p: BitPair, q: BitPair) -> float:
            b = boundary.get(i)
            return b.cost(p, q, metric, self._rules) if b is not None else 0.0

        return chain_plan(per, allowed, link, dearest)

    def _grid(self, metric: str) -> tuple[Grid, ...]:
        self._costs(metric)
        return self._grids[metric]

    def _costs(self, metric: str) -> tuple[LayerCosts, ...]:
        try:
            return self._per_layer[metric]
        except KeyError:
            raise TableError(f"table {self.table_name} has no metric '{metric}'; it has {', '.join(self._per_layer)}") from None

    def _unsupported(self, index: int, pair: object) -> str:
        name = self.names[index]
        runs = describe_pairs(self.supported_bits(index))
        return f"table {self.table_name} cannot cost layer '{name}' at {pair!r}; it runs {runs}"


def _grid(costs: LayerCosts) -> Grid:
    """Dense ``[w][a]`` lookup (indices up to 32): list indexing beats hashing a tuple per layer."""
    size = FLOAT_BITS + 1
    grid: Grid = [[None] * size for _ in range(size)]
    for (w, a), c in costs.items():
        grid[w][a] = c
    return grid


def describe_pairs(pairs: Sequence[BitPair]) -> str:
    """Short human form of a set of (w, a) pairs, e.g. ``w, a in 1..8`` or ``(32, 32), (8, 8)``."""
    ws, as_ = sorted({w for w, _ in pairs}), sorted({a for _, a in pairs})
    if len(pairs) == len(ws) * len(as_) and ws == list(range(ws[0], ws[-1] + 1)) and ws == as_:
        return f"w, a in {ws[0]}..{ws[-1]}"
    shown = ", ".join(f"({w}, {a})" for w, a in sorted(pairs)[:12])
    return f"(w, a) in {shown}{', ...' if len(pairs) > 12 else ''}"
