"""Network pricing (:class:`NetworkCosts`) on hand-made costs: every number below is worked out by hand.

Three layers with costs chosen as powers of ten per layer, so a wrong layer, pair, boundary or
correction shows up as a wrong digit; ``cost_range`` is checked against brute force over every
policy, with and without boundary costs.
"""

from __future__ import annotations

import itertools

import pytest
from torch import nn

from haq.core.errors import PolicyError, TableError
from haq.quant import LayerBits, LayerInfo, QuantPolicy, discover_layers
from haq.tables.network import Boundary, NetworkCosts, describe_pairs
from haq.tables.schema import Correction, Transition, TransitionRule

A, B, C = (8, 8), (4, 4), (32, 32)


def _layers() -> list[LayerInfo]:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    )
    return discover_layers(model, (1, 4, 4))


LAYERS = _layers()
NAMES = [layer.name for layer in LAYERS]
LATENCY = [{A: 1.0, B: 0.5, C: 4.0}, {A: 10.0, B: 20.0, C: 40.0}, {A: 100.0, B: 300.0}]  # the last runs no float
ENERGY = [{p: 1000.0 * v for p, v in d.items()} for d in LATENCY]
RULES = {
    (A, C, "", ""): TransitionRule(A, C, 0.5, 0.01, 5.0, 0.1, "measured"),
    (C, A, "", ""): TransitionRule(C, A, 0.25, 0.0, 2.5, 0.0, "measured"),
    (C, B, "", ""): TransitionRule(C, B, 2.0, 0.0, 20.0, 0.0, "measured"),
}
EXACT = {(B, A): Transition((1, 2, 4, 4), B, A, 0.75, None, "measured", "DequantizeLinear")}


def _net(boundaries: bool = False, correction: Correction | None = None) -> NetworkCosts:
    bounds = [Boundary(1, 32, EXACT), Boundary(2, 32, {})] if boundaries else []
    return NetworkCosts(
        "hand",
        LAYERS,
        {"latency": LATENCY, "energy": ENERGY},
        bounds,
        RULES if boundaries else {},
        {correction.metric: correction} if correction else {},
    )


def _policy(*pairs: tuple[int, int]) -> QuantPolicy:
    return QuantPolicy({n: LayerBits(*p) for n, p in zip(NAMES, pairs)})


def test_additive_costs_and_metrics() -> None:
    net = _net()
    assert not net.graph_aware and net.metrics == ("latency", "energy")
    assert net.policy_cost(_policy(A, B, A)) == 1.0 + 20.0 + 100.0
    assert net.policy_cost(_policy(C, C, B), "energy") == 4000.0 + 40000.0 + 300000.0
    assert net.bits_cost([B, A, B]) == 0.5 + 10.0 + 300.0
    assert net.bits_cost([B, A, B], "energy") == 310500.0
    assert net.supported_bits(2) == [B, A] and net.supported_bits(0) == [B, A, C]
    assert net.layer_costs(1) == LATENCY[1] and net.layer_costs(2, "energy") == ENERGY[2]
    assert net.correction() is None


def test_boundaries_add_exact_transitions_then_rules() -> None:
    net = _net(boundaries=True)
    assert net.graph_aware
    # B -> A in front of layer 1: the exact transition (0.75); A -> C there: the rule 0.5 + 0.01 * 32
    assert net.bits_cost([B, A, A]) == pytest.approx(0.5 + 10.0 + 100.0 + 0.75)
    assert net.bits_cost([A, C, A]) == pytest.approx(1.0 + 40.0 + 100.0 + (0.5 + 0.32) + 0.25)
    assert net.bits_cost([A, C, A], "energy") == pytest.approx(1000.0 + 40000.0 + 100000.0 + (5.0 + 3.2) + 2.5)
    assert net.bits_cost([B, A, A], "energy") == pytest.approx(500.0 + 10000.0 + 100000.0)  # no energy in the transition
    assert net.bits_cost([A, A, A]) == 111.0  # no change, no boundary cost
    assert net.bits_cost([B, B, A]) == 0.5 + 20.0 + 100.0  # B -> A has no exact transition at layer 2 and no rule
    assert net.bits_cost([C, C, B]) == 4.0 + 40.0 + 300.0 + 2.0
    assert net.policy_cost(_policy(A, C, A)) == net.bits_cost([A, C, A])


def test_boundary_cost_directly() -> None:
    b = Boundary(1, 100, EXACT)
    assert b.cost(A, A, "latency", RULES) == 0.0
    assert b.cost(B, A, "latency", RULES) == 0.75 and b.cost(B, A, "energy", RULES) == 0.0
    assert b.cost(A, C, "latency", RULES) == pytest.approx(0.5 + 0.01 * 100)
    assert b.cost(A, C, "energy", RULES) == pytest.approx(5.0 + 0.1 * 100)
    assert b.cost(A, B, "latency", RULES) == 0.0


def test_a_rule_keyed_by_the_consumer_op_wins_there_only() -> None:
    rules = {**RULES, (A, C, "dwconv", ""): TransitionRule(A, C, 0.0, 0.05, None, None, "measured", "dwconv")}
    assert Boundary(1, 100, {}, "dwconv").cost(A, C, "latency", rules) == pytest.approx(0.05 * 100)
    assert Boundary(1, 100, {}, "conv").cost(A, C, "latency", rules) == pytest.approx(0.5 + 0.01 * 100)
    assert Boundary(1, 100, {}, "dwconv").cost(C, A, "latency", rules) == 0.25  # no dwconv rule there: the shared one


def test_correction_scales_and_offsets_everything() -> None:
    corr = Correction("f" * 16, "hand", "latency", 1.5, 0.25, 4)
    net = _net(correction=corr)
    assert net.correction() == corr and net.correction("energy") is None
    assert net.policy_cost(_policy(A, A, A)) == 1.5 * 111.0 + 0.25
    assert net.bits_cost([B, B, B]) == 1.5 * 320.5 + 0.25
    assert net.policy_cost(_policy(A, A, A), "energy") == 111000.0  # a latency correction leaves energy alone
    assert net.cost_range() == (1.5 * 110.5 + 0.25, 1.5 * 344.0 + 0.25)


@pytest.mark.parametrize("boundaries", [False, True])
@pytest.mark.parametrize("metric", ["latency", "energy"])
def test_cost_range_is_brute_force_extremes(boundaries: bool, metric: str) -> None:
    net = _net(boundaries=boundaries)
    costs = [net.bits_cost(list(bits), metric) for bits in itertools.product(*(sorted(d) for d in LATENCY))]
    lo, hi = net.cost_range(metric)
    assert lo == pytest.approx(min(costs)) and hi == pytest.approx(max(costs))
    assert net.cost_range(metric) == (lo, hi)  # memoized, same answer
    per_layer = ENERGY if metric == "energy" else LATENCY
    if boundaries:  # the cheapest layer choices pay a boundary, the dearest gain one: the extremes move
        assert lo > sum(min(d.values()) for d in per_layer) or metric == "energy"
        assert hi > sum(max(d.values()) for d in per_layer)
    else:
        assert (lo, hi) == (sum(min(d.values()) for d in per_layer), sum(max(d.values()) for d in per_layer))


def test_missing_layers_unsupported_pairs_and_metrics_are_errors() -> None:
    net = _net()
    with pytest.raises(PolicyError, match=rf"^policy has no bits for layer '{NAMES[2]}'; it must cover all 3 layers$"):
        net.policy_cost(QuantPolicy({n: LayerBits(8, 8) for n in NAMES[:2]}))
    runs = r"\(w, a\) in \(4, 4\), \(8, 8\)"
    with pytest.raises(TableError, match=rf"^table hand cannot cost layer '{NAMES[2]}' at \(32, 32\); it runs {runs}$"):
        net.policy_cost(_policy(A, A, C))
    with pytest.raises(TableError, match=rf"cannot cost layer '{NAMES[1]}' at \(2, 2\)"):
        net.policy_cost(_policy(A, (2, 2), A))
    with pytest.raises(TableError, match=rf"cannot cost layer '{NAMES[0]}' at \(2, 8\)"):
        net.bits_cost([(2, 8), A, A])
    with pytest.raises(PolicyError, match="^got bits for 2 layers, the network has 3$"):
        net.bits_cost([A, A])
    with pytest.raises(TableError, match="^table hand has no metric 'size'; it has latency, energy$"):
        net.policy_cost(_policy(A, A, A), "size")
    with pytest.raises(TableError, match="no metric 'power'"):
        net.cost_range("power")


def test_describe_pairs() -> None:
    full = [(w, a) for w in range(2, 9) for a in range(2, 9)]
    assert describe_pairs(full) == "w, a in 2..8"
    assert describe_pairs([(8, 8), (32, 32)]) == "(w, a) in (8, 8), (32, 32)"
    assert describe_pairs([(2, 2), (2, 4), (4, 2), (4, 4)]) == "(w, a) in (2, 2), (2, 4), (4, 2), (4, 4)"  # not contiguous
    gappy = [(w, a) for w in (2, 3, 5) for a in (2, 3, 5)]
    assert describe_pairs(gappy).startswith("(w, a) in (2, 2), (2, 3), (2, 5)")
    many = [(w, 8) for w in range(1, 9)] + [(w, 4) for w in range(1, 9)]
    text = describe_pairs(many)
    assert text.endswith(", ...") and text.count("(") == 13  # the prefix and the first 12 pairs
    assert describe_pairs([(4, 4)]) == "w, a in 4..4"


def test_graph_awareness_needs_boundaries_and_something_to_price_there() -> None:
    costs = {"latency": LATENCY}
    net = NetworkCosts("n", LAYERS, costs, [], RULES, {})
    assert net.layers == tuple(LAYERS) and net.names == tuple(NAMES)
    assert not net.graph_aware  # rules, but no boundary to apply them at
    assert not NetworkCosts("n", LAYERS, costs, [Boundary(1, 32, {})], {}, {}).graph_aware  # nothing known there
    exact_only = NetworkCosts("n", LAYERS, costs, [Boundary(1, 32, EXACT)], {}, {})
    assert exact_only.graph_aware and exact_only.bits_cost([B, A, A]) == 0.5 + 10.0 + 100.0 + 0.75


@pytest.mark.parametrize("metric", ["latency", "energy"])
def test_cost_range_with_uneven_choices_and_a_single_boundary(metric: str) -> None:
    """Layers with different pair sets and a boundary only in front of the last layer."""
    per = {
        "latency": [{A: 1.0, B: 0.5}, {A: 10.0, C: 40.0, (2, 2): 12.0}, {A: 100.0, C: 30.0}],
        "energy": [{A: 3.0, B: 1.0}, {A: 1.0, C: 2.0, (2, 2): 5.0}, {A: 1.0, C: 9.0}],
    }
    rules = {
        (A, C, "", ""): RULES[(A, C, "", "")],
        (C, A, "", ""): RULES[(C, A, "", "")],
        ((2, 2), A, "", ""): TransitionRule((2, 2), A, 7.0, 0.0, 7.0, 0.0, "measured"),
    }
    net = NetworkCosts("n", LAYERS, per, [Boundary(2, 10, {})], rules, {})
    choices = [sorted(d) for d in per[metric]]
    costs = [net.bits_cost(list(bits), metric) for bits in itertools.product(*choices)]
    assert net.cost_range(metric) == pytest.approx((min(costs), max(costs)))


def test_the_error_names_the_first_unsupported_layer() -> None:
    with pytest.raises(TableError, match=rf"cannot cost layer '{NAMES[2]}' at \(32, 32\)"):
        _net().bits_cost([A, A, C])
    with pytest.raises(TableError, match=rf"cannot cost layer '{NAMES[1]}' at 8"):
        _net().bits_cost([A, 8, A])  # type: ignore[list-item]


def test_describe_pairs_elides_after_twelve() -> None:
    twelve = [(w, a) for w in (1, 2, 3, 4) for a in (2, 4, 8)]
    assert not describe_pairs(twelve).endswith("...") and describe_pairs(twelve).count("(") == 13
    thirteen = [*twelve, (5, 2)]
    assert describe_pairs(thirteen).endswith(", ...") and describe_pairs(thirteen).count("(") == 13
