"""The budget model on a hand-made table: choices, reference / cheapest / dearest, the refusal of an
unreachable budget, action mapping and the projection's tie-breaks, all with numbers worked out by hand."""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from haq.baselines.candidates import random_assignment, random_candidates
from haq.core.errors import ConfigError, TableError
from haq.problem.allocation import sensitivity_prior
from haq.problem.budget import (
    Budget,
    BudgetModel,
    LayerChoices,
    allowed_pairs,
    build_budget_model,
    encode_pair,
    layer_metric_cost,
    lower_to_fit,
    map_action,
    project,
    project_episode,
)
from haq.problem.config import PROJECTIONS
from haq.problem.sensitivity import LayerSensitivity, Sensitivity
from haq.quant import LayerBits, LayerInfo, LayerSignature, QuantPolicy, discover_layers, model_size_bits
from haq.tables.plan import Plan, chain_plan

BitPair = tuple[int, int]


def _layers() -> list[LayerInfo]:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=False), nn.ReLU(), nn.Linear(2, 2))
    return discover_layers(model, (4,))


LAYERS = _layers()
NAMES = [layer.name for layer in LAYERS]
# Per layer: (w, a) -> latency. Layer 1 has a tie between (2, 4) and (4, 2) at its cheapest.
COSTS: list[dict[BitPair, float]] = [
    {(2, 2): 1.0, (2, 4): 2.0, (4, 4): 4.0, (8, 8): 8.0, (32, 32): 16.0},
    {(2, 4): 10.0, (4, 2): 10.0, (4, 4): 20.0, (8, 8): 80.0, (32, 32): 160.0},
    {(2, 2): 100.0, (4, 4): 200.0, (8, 8): 300.0, (32, 32): 50.0},  # float is the cheapest here
]


class HandTable:
    """A DeviceTable with the costs above; the whole-policy cost adds ``boundary`` per change of pair."""

    name = "hand"
    meta: Mapping[str, object] = {}
    metrics: tuple[str, ...] = ("latency", "energy")  # energy is twice the latency
    weight_container: str | None = None
    export_weights = "uint8"

    def __init__(self, boundary: float = 0.0, costs: list[dict[BitPair, float]] | None = None) -> None:
        self.boundary = boundary
        self.costs = costs or COSTS

    def _index(self, sig: LayerSignature) -> int:
        return next(i for i, layer in enumerate(LAYERS) if layer.signature == sig)

    def supported_bits(self, sig: LayerSignature) -> list[BitPair]:
        return list(self.costs[self._index(sig)])

    def layer_cost(self, sig: LayerSignature, w_bits: int, a_bits: int, metric: str = "latency") -> float:
        return self.costs[self._index(sig)][(w_bits, a_bits)] * (2.0 if metric == "energy" else 1.0)

    def policy_cost(self, layers: Sequence[LayerInfo], policy: QuantPolicy, metric: str = "latency") -> float:
        pairs = [(policy[x.name].w_bits, policy[x.name].a_bits) for x in layers]
        changes = sum(p != q for p, q in zip(pairs, pairs[1:]))
        total = sum(self.costs[i][p] for i, p in enumerate(pairs)) + self.boundary * changes
        return total * (2.0 if metric == "energy" else 1.0)

    def check_covers(self, layers: Sequence[LayerInfo]) -> None:
        return None


def _model(
    ratio: float = 0.5,
    absolute: float | None = None,
    table: HandTable | None = None,
    metric: str = "latency",
    max_bits: int = 8,
    pin: int | None = None,
):  # type: ignore[no-untyped-def]
    return build_budget_model(LAYERS, table or HandTable(), metric, ratio, absolute, 2, max_bits, pin)


def test_choices_reference_cheapest_and_dearest() -> None:
    bm = _model()
    assert [c.name for c in bm.layers] == NAMES
    assert bm.layers[0].pairs == ((2, 2), (2, 4), (4, 4), (8, 8))  # sorted, float (32) outside 2..8
    assert bm.layers[0].costs == (1.0, 2.0, 4.0, 8.0)
    assert (bm.layers[1].cheapest, bm.layers[1].dearest) == (10.0, 80.0)
    assert bm.budget == Budget("latency", target=0.5 * 388.0, reference=388.0, cheapest=111.0, dearest=388.0)
    assert bm.budget.to_dict() == {"metric": "latency", "target": 194.0, "reference": 388.0, "cheapest": 111.0, "dearest": 388.0}
    assert _model(absolute=150.0).budget.target == 150.0
    assert _model(ratio=1.0).budget.target == 388.0


def test_float_range_reference_is_the_top_pair() -> None:
    bm = _model(ratio=1.0, max_bits=32)
    assert bm.budget.reference == 16.0 + 160.0 + 50.0  # uniform 32 bits, though float is cheap on the last layer
    assert bm.budget.cheapest == 1.0 + 10.0 + 50.0
    assert bm.budget.dearest == 16.0 + 160.0 + 300.0


def test_min_cost_cheapest_pair_and_completion() -> None:
    bm = _model(table=HandTable(boundary=5.0))
    assert bm.min_cost_from(0) == 111.0 and bm.min_cost_from(1) == 110.0 and bm.min_cost_from(2) == 100.0
    assert bm.min_cost_from(3) == 0.0
    assert bm.fallback([]) == (2, 2)  # no plan of its own: every layer at its cheapest pair
    assert bm.fallback([(8, 8)]) == (4, 2)  # a tie at 10: the higher weight width wins
    # decided: layer 0 at (8, 8); this pair for layer 1; layer 2 at its cheapest (2, 2); two changes
    assert bm.completion_cost([(8, 8)], (4, 4)) == 8.0 + 20.0 + 100.0 + 2 * 5.0
    assert bm.completion_cost([], (2, 2)) == 1.0 + 10.0 + 100.0 + 2 * 5.0
    assert bm.completion_cost([(2, 2), (4, 2)], (2, 2)) == 111.0 + 2 * 5.0
    assert bm.policy_cost([(2, 2), (4, 4), (4, 4)]) == 1.0 + 20.0 + 200.0 + 5.0
    assert bm.budget.cheapest == 111.0 + 2 * 5.0  # the whole-policy cost, boundaries included


class ChainHandTable(HandTable):
    """:class:`HandTable` that plans its own completions, boundaries included (a ChainPlanner)."""

    def layer_costs_in(self, layers: Sequence[LayerInfo], metric: str = "latency") -> list[Mapping[BitPair, float]]:
        scale = 2.0 if metric == "energy" else 1.0
        return [{p: c * scale for p, c in self.costs[i].items()} for i in range(len(layers))]

    def plan(
        self, layers: Sequence[LayerInfo], allowed: Sequence[Sequence[BitPair]], metric: str = "latency", dearest: bool = False
    ) -> Plan:
        per_change = self.boundary * (2.0 if metric == "energy" else 1.0)
        return chain_plan(self.layer_costs_in(layers, metric), allowed, lambda i, p, q: per_change * (p != q), dearest)


def _every_policy(bm: BudgetModel) -> list[tuple[BitPair, ...]]:
    return list(itertools.product(*(c.pairs for c in bm.layers)))


def test_where_boundaries_cost_the_budget_knows_the_true_cheapest_and_dearest() -> None:
    # boundaries of 60: every layer at its own cheapest pair, (2, 2) (4, 2) (2, 2), costs 111 + 120 = 231;
    # fewer changes of pair cost less
    planned = _model(absolute=200.0, table=ChainHandTable(boundary=60.0))
    every = [planned.policy_cost(p) for p in _every_policy(planned)]
    assert planned.budget.cheapest == min(every) < 200.0 < 231.0 and planned.budget.dearest == max(every)
    with pytest.raises(ConfigError, match="below the cheapest achievable 231"):
        _model(absolute=200.0, table=HandTable(boundary=60.0))  # without a plan: the greedy completion only
    # the completion the budget checks is the cheapest way to finish from the decided layers
    for first in planned.layers[0].pairs:
        assert planned.completion_cost([], first) == min(planned.policy_cost(p) for p in _every_policy(planned) if p[0] == first)
    path = planned.plan.path()
    assert planned.fallback([]) == path[0] and planned.fallback(path[:1]) == path[1]


def test_the_prior_falls_back_to_the_budgets_cheapest_policy_where_per_layer_steps_run_out() -> None:
    # boundaries of 500: the per-layer cheapest (2, 2) (4, 2) (2, 2) costs 1111; one pair throughout is cheaper
    bm = _model(ratio=1.0, table=ChainHandTable(boundary=500.0))
    tight = _model(absolute=bm.budget.cheapest, table=ChainHandTable(boundary=500.0))
    flat = {b: 0.0 for b in (2, 4, 8, 32)}
    sens = Sensitivity({name: LayerSensitivity(flat, flat) for name in NAMES}, samples=1)
    prior = sensitivity_prior(tight, sens)
    assert tight.fits(tight.policy_cost(prior)) and tight.policy_cost(prior) == tight.budget.cheapest < 1111.0


@pytest.mark.parametrize("boundary", [0.0, 5.0, 60.0, 500.0])
@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_projected_episodes_always_fit_a_budget_the_plan_allows(boundary: float, fraction: float, projection: str) -> None:
    table = ChainHandTable(boundary=boundary)
    probe = _model(ratio=1.0, table=table)
    target = probe.budget.cheapest + fraction * (probe.budget.dearest - probe.budget.cheapest)
    bm = _model(absolute=target, table=table)
    rng = np.random.default_rng(int(boundary) + int(10 * fraction))
    for cand in random_candidates(bm, 50, rng, projection):
        assert bm.fits(bm.policy_cost(cand.pairs))
    # every projected episode fits, and the cheapest policy is among what an episode can end at
    cheapest = min(_every_policy(bm), key=bm.policy_cost)
    assert bm.policy_cost(bm.plan.path()) == bm.policy_cost(cheapest)


def test_fits_has_only_a_relative_rounding_tolerance() -> None:
    bm = _model(absolute=200.0)
    assert bm.fits(200.0) and bm.fits(200.0 * (1 + 1e-10)) and bm.fits(200.0 * (1 + 1e-9)) and bm.fits(0.0)
    assert not bm.fits(200.0 * (1 + 1e-8)) and not bm.fits(201.0)


def test_unreachable_budget_is_refused_with_the_range() -> None:
    with pytest.raises(ConfigError) as err:
        _model(ratio=0.25)
    assert str(err.value) == (
        "latency budget 97 is below the cheapest achievable 111; achievable range is 111..388 "
        "(ratio 0.286..1.000 of uniform 8-bit); this device also runs float: use --max-bits 32 to let layers stay float"
    )
    _model(absolute=111.0)  # exactly the cheapest is reachable, and a rounding error below it
    _model(absolute=111.0 * (1 - 1e-9))
    with pytest.raises(ConfigError, match=r"ratio 0\.270\.\.2\.106 of uniform 32-bit\)$"):  # no advice once float is allowed
        _model(ratio=0.1, max_bits=32)
    with pytest.raises(ConfigError, match="below the cheapest achievable 111"):
        _model(absolute=110.0)
    no_float = HandTable(costs=[{p: c for p, c in d.items() if p != (32, 32)} for d in COSTS])
    with pytest.raises(ConfigError, match=r"of uniform 8-bit\)$"):
        _model(ratio=0.25, table=no_float)


def test_unknown_metric_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^table 'hand' has no 'power' metric; it has latency, energy \(or use size\)$"):
        _model(metric="power")


def test_energy_budget_prices_energy() -> None:
    bm = _model(metric="energy", table=HandTable(boundary=5.0))
    assert bm.layers[0].costs == (2.0, 4.0, 8.0, 16.0)
    assert bm.budget.reference == 2 * 388.0 and bm.budget.cheapest == 2 * (111.0 + 2 * 5.0)


TIE = [{(2, 2): 1.0, (2, 4): 1.0, (4, 2): 1.0, (4, 4): 1.0, (8, 8): 8.0}]


@pytest.mark.parametrize(
    ("second", "cheapest"),
    [
        ({(2, 4): 10.0, (8, 8): 80.0}, 1.0 + 10.0 + 100.0 + 2 * 5.0),  # (4, 4) -> (2, 4) -> (2, 2): two changes
        ({(4, 4): 10.0, (8, 8): 80.0}, 1.0 + 10.0 + 100.0 + 1 * 5.0),
    ],  # (4, 4) -> (4, 4) -> (2, 2): one change
)
def test_ties_at_the_cheapest_cost_take_the_highest_widths(second: dict[BitPair, float], cheapest: float) -> None:
    """Equal-cost pairs: the higher weight width, then the higher activation width: (4, 4) of the four."""
    costs = [TIE[0], second, {(2, 2): 100.0, (8, 8): 300.0}]
    bm = _model(table=HandTable(boundary=5.0, costs=costs), ratio=1.0)
    assert bm.fallback([]) == (4, 4)
    assert bm.budget.cheapest == cheapest


def test_size_metric_counts_weight_bits_and_float_biases() -> None:
    bm = _model(metric="size", ratio=1.0)
    # weights 12, 6, 4; biases 3 and 2 outputs at 32 bits (the middle layer has none)
    assert bm.layers[0].costs[bm.layers[0].pairs.index((4, 4))] == 12 * 4 + 3 * 32
    assert bm.layers[1].costs[bm.layers[1].pairs.index((4, 2))] == 6 * 4
    assert bm.budget.reference == 22 * 8 + 5 * 32
    policy = QuantPolicy({n: LayerBits(w, a) for n, (w, a) in zip(NAMES, [(2, 2), (4, 2), (8, 8)])})
    assert bm.policy_cost([(2, 2), (4, 2), (8, 8)]) == model_size_bits(LAYERS, policy) == 12 * 2 + 6 * 4 + 4 * 8 + 5 * 32
    assert layer_metric_cost(HandTable(), LAYERS[2], (2, 2), "size") == 4 * 2 + 2 * 32


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_invalid_table_cost_is_refused(bad: float) -> None:
    table = HandTable(costs=[COSTS[0], {**COSTS[1], (4, 2): bad}, COSTS[2]])
    with pytest.raises(TableError, match=rf"^table 'hand' gives layer '{NAMES[1]}' at w4a2 an invalid latency cost"):
        _model(table=table)
    assert layer_metric_cost(table, LAYERS[1], (8, 8), "latency") == 80.0
    free = HandTable(costs=[COSTS[0], {**COSTS[1], (4, 2): 0.0}, COSTS[2]])
    assert layer_metric_cost(free, LAYERS[1], (4, 2), "energy") == 0.0  # free is valid


def test_allowed_pairs_pins_and_refusals() -> None:
    table = HandTable()
    assert allowed_pairs(table, LAYERS[0], 2, 8, None) == ((2, 2), (2, 4), (4, 4), (8, 8))
    assert allowed_pairs(table, LAYERS[0], 4, 8, None) == ((4, 4), (8, 8))
    assert allowed_pairs(table, LAYERS[0], 2, 8, 8) == ((8, 8),)
    assert allowed_pairs(table, LAYERS[2], 2, 8, 32) == ((32, 32),)  # a pin may leave the search range
    with pytest.raises(ConfigError, match=rf"^cannot pin layer '{NAMES[1]}' to 2 bits: table 'hand' supports "):
        allowed_pairs(table, LAYERS[1], 2, 8, 2)
    with pytest.raises(
        TableError,
        match=rf"supports no \(w, a\) pair within bits 5\.\.7 for layer '{NAMES[0]}'; it supports "
        r"\[.*\]; this device also runs float: use --max-bits 32",
    ):
        allowed_pairs(table, LAYERS[0], 5, 7, None)
    pinned = _model(pin=8, ratio=1.0)
    assert pinned.layers[0].pairs == ((8, 8),) and pinned.layers[2].pairs == ((8, 8),) and len(pinned.layers[1].pairs) == 4


PAIRS_3X3 = tuple((w, a) for w in (2, 4, 8) for a in (2, 4, 8))
RAGGED = ((2, 2), (2, 4), (4, 4), (8, 2), (8, 4), (8, 8))


@pytest.mark.parametrize("pairs", [PAIRS_3X3, RAGGED, ((8, 8),)])
def test_encode_is_the_inverse_of_map(pairs: tuple[BitPair, ...]) -> None:
    for pair in pairs:
        action = encode_pair(pair, pairs)
        assert action.dtype == np.float32 and np.all(np.abs(action) < 1.0)
        assert map_action(action, pairs) == pair


def test_map_action_bins() -> None:
    assert map_action(np.array([-1.0, -1.0]), PAIRS_3X3) == (2, 2)
    assert map_action(np.array([1.0, 1.0]), PAIRS_3X3) == (8, 8)
    assert map_action(np.array([5.0, -5.0]), PAIRS_3X3) == (8, 2)  # clipped into the square
    assert map_action(np.array([-0.34, 0.34]), PAIRS_3X3) == (2, 8)  # bins of width 2/3
    assert map_action(np.array([-0.32, 0.32]), PAIRS_3X3) == (4, 4)
    assert map_action(np.array([0.0, 0.0]), RAGGED) == (4, 4)  # 3 weight widths; 4 runs only a4
    assert map_action(np.array([0.9, -0.1]), RAGGED) == (8, 4)  # 8 runs a2, a4, a8
    weights_vary = ((2, 8), (4, 8), (8, 8))
    assert [map_action(np.array([u, 0.0]), weights_vary) for u in (-0.9, 0.0, 0.9)] == list(weights_vary)
    np.testing.assert_allclose(encode_pair((4, 8), weights_vary), [0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(encode_pair((4, 8), PAIRS_3X3), [0.0, 2 / 3], atol=1e-7)
    np.testing.assert_allclose(encode_pair((8, 2), RAGGED), [2 / 3, -2 / 3], atol=1e-7)


def _cheapest(choices: LayerChoices) -> BitPair:
    """What a one-layer budget falls back to: its cheapest pair (highest widths on a tie)."""
    return chain_plan([dict(zip(choices.pairs, choices.costs))], [choices.pairs]).first


def test_projection_prefers_the_nearest_fitting_pair() -> None:
    choices = LayerChoices("l", PAIRS_3X3, tuple(float(w * a) for w, a in PAIRS_3X3))
    cost = dict(zip(choices.pairs, choices.costs))
    assert project((8, 8), choices, lambda p: True, _cheapest(choices)) == (8, 8)
    # allowance 32: (8, 4) and (4, 8) fit, both 16 away in squared bits and equally dear -> the smaller pair
    assert project((8, 8), choices, lambda p: cost[p] <= 32, _cheapest(choices)) == (4, 8)
    skewed = LayerChoices("s", PAIRS_3X3, tuple(30.0 if p == (8, 4) else float(p[0] * p[1]) for p in PAIRS_3X3))
    assert project((8, 8), skewed, lambda p: p != (8, 8), _cheapest(skewed)) == (4, 8)  # equally near: the dearer (32 > 30)
    skewed = LayerChoices("s", PAIRS_3X3, tuple(34.0 if p == (8, 4) else float(p[0] * p[1]) for p in PAIRS_3X3))
    assert project((8, 8), skewed, lambda p: p != (8, 8), _cheapest(skewed)) == (8, 4)
    # allowance 16: (8, 2) is 36 away, (4, 4) is 32 away: nearest, though (8, 2) is just as dear
    assert project((8, 8), choices, lambda p: cost[p] <= 16, _cheapest(choices)) == (4, 4)
    # never raises a width: from (2, 8) with allowance 8 only (2, 4) and (2, 2) qualify
    assert project((2, 8), choices, lambda p: cost[p] <= 8, _cheapest(choices)) == (2, 4)
    # an uneven request: from (8, 2) with allowance 8 the nearest is (4, 2), not (2, 2)
    assert project((8, 2), choices, lambda p: cost[p] <= 8, _cheapest(choices)) == (4, 2)
    # nothing fits below the request: the fallback (here the cheapest of all, highest widths on a tie)
    tie = LayerChoices("t", ((2, 4), (4, 2), (4, 4)), (3.0, 3.0, 9.0))
    assert project((2, 4), tie, lambda p: False, _cheapest(tie)) == (4, 2)
    same_w = LayerChoices("t", ((4, 2), (4, 4), (8, 8)), (3.0, 3.0, 9.0))
    assert project((8, 8), same_w, lambda p: False, _cheapest(same_w)) == (4, 4)
    assert project((4, 4), choices, lambda p: p == (8, 8), _cheapest(choices)) == (2, 2)


@pytest.mark.parametrize("pairs", [PAIRS_3X3, RAGGED, ((8, 8),), tuple((w, a) for w in range(2, 9) for a in range(2, 9))])
def test_centred_map_puts_zero_on_the_centre_and_keeps_every_pair(pairs: tuple[BitPair, ...]) -> None:
    grid = np.linspace(-1.0, 1.0, 41)
    for center in pairs:
        assert map_action(np.zeros(2), pairs, center) == center
        assert map_action(np.array([-1.0, -1.0]), pairs, center) == min(pairs)
        assert map_action(np.array([1.0, 1.0]), pairs, center) == max(pairs)
        for pair in pairs:
            action = encode_pair(pair, pairs, center)
            assert np.all(np.abs(action) <= 1.0) and map_action(action, pairs, center) == pair
        ws = [map_action(np.array([u, 0.0]), pairs, center)[0] for u in grid]
        assert ws == sorted(ws) and set(ws) == {p[0] for p in pairs}  # monotone and onto the weight widths


def test_centred_map_off_grid_centre_uses_the_nearest_width() -> None:
    # the centre (4, 8) is not among RAGGED's activations for w=4 (only a4): 0 lands on the nearest, a4
    assert map_action(np.zeros(2), RAGGED, (4, 8)) == (4, 4)
    # centre (8, 2): weights bin 2 of 3 at u=0, activations a2 of (2, 4, 8)
    assert map_action(np.zeros(2), RAGGED, (8, 2)) == (8, 2)
    assert map_action(np.array([0.0, 0.3]), RAGGED, (8, 2)) == (8, 4)
    np.testing.assert_allclose(encode_pair((8, 2), RAGGED, (8, 2)), [0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(encode_pair((2, 2), RAGGED, (8, 2)), [-1 + 0.5 / 2.5, -1 + 0.5 / 0.5], atol=1e-6)


def test_ceiling_repair_keeps_a_fitting_request_and_cuts_the_widest_widths_where_they_save_most() -> None:
    bm = _model()  # target 194: half of 8 + 80 + 300
    assert lower_to_fit([(8, 8), (4, 4), (2, 2)], bm, "ceiling") == [(8, 8), (4, 4), (2, 2)]  # 128 fits: unchanged
    # level 8, most saving first: layer 2 (300 -> 200) leaves 288, layer 1 (80 -> 20) 228, layer 0 224;
    # level 4: layer 2 (4, 4) -> (2, 2) leaves 124, which fits before the small layers are touched
    assert lower_to_fit([(8, 8)] * 3, bm, "ceiling") == [(4, 4), (4, 4), (2, 2)]
    roomier = _model(absolute=230.0)
    assert lower_to_fit([(8, 8)] * 3, roomier, "ceiling") == [(8, 8), (4, 4), (4, 4)]  # 228 fits: layer 0 is never cut
    # a layer asked below the ceiling keeps its widths, and its savings raise the ceiling elsewhere
    assert lower_to_fit([(2, 2), (8, 8), (8, 8)], roomier, "ceiling") == [(2, 2), (4, 4), (4, 4)]
    # at (4, 4) layer 1 may drop either width (both cost 10): the weights are kept
    assert lower_to_fit([(2, 2), (4, 4), (2, 2)], _model(absolute=115.0), "ceiling") == [(2, 2), (4, 2), (2, 2)]
    with pytest.raises(ConfigError, match="choose one of shift, ceiling"):
        lower_to_fit([(8, 8)] * 3, bm, "greedy")


FULL_GRID = [{(w, a): scale * w * a for w in range(2, 9) for a in range(2, 9)} for scale in (1.0, 7.0, 3.0)]


def test_shift_lowers_every_layer_in_turn_and_ceiling_only_the_widest() -> None:
    bm = _model(absolute=300.0, table=HandTable(costs=FULL_GRID))
    request = [(8, 8), (4, 4), (8, 8)]  # 64 + 112 + 192 = 368
    # ceiling: (8, 8) -> (8, 7) -> (7, 7) -> (7, 6) on the outer layers, the larger saving (layer 2) first;
    # 368 - 24 - 8 - 21 - 7 - 21 = 287; layer 1 is below the ceiling throughout
    assert lower_to_fit(request, bm, "ceiling") == [(7, 7), (4, 4), (7, 6)]
    # shift: round 1 lowers layer 1 (-28), layer 2 (-24), layer 0 (-8) to 308; round 2 starts with the
    # tie of layers 1 and 2 (-21 each, the lower index first) and fits at 287
    assert lower_to_fit(request, bm, "shift") == [(8, 7), (3, 3), (8, 7)]


@settings(max_examples=60, deadline=None)
@given(
    requested=st.lists(st.tuples(st.integers(2, 8), st.integers(2, 8)), min_size=3, max_size=3),
    fraction=st.floats(0.0, 1.0),
    boundary=st.sampled_from([0.0, 20.0]),
    rule=st.sampled_from(["ceiling", "shift"]),
)
def test_repairs_fit_never_raise_a_width_and_spread_the_cut(
    requested: list[BitPair], fraction: float, boundary: float, rule: str
) -> None:
    table = ChainHandTable(boundary=boundary, costs=FULL_GRID)
    probe = _model(ratio=1.0, table=table)
    bm = _model(absolute=probe.budget.cheapest + fraction * (probe.budget.dearest - probe.budget.cheapest), table=table)
    repaired = lower_to_fit(requested, bm, rule)
    assert bm.fits(bm.policy_cost(repaired))
    if bm.fits(bm.policy_cost(requested)):
        assert repaired == requested
        return
    assert all(q[0] <= p[0] and q[1] <= p[1] for p, q in zip(requested, repaired))
    if rule == "ceiling":  # every cut layer ends within one bit of the widest width left
        widest = max(max(q) for q in repaired)
        assert all(max(q) >= widest - 1 for p, q in zip(requested, repaired) if q != p)
    else:  # every layer above the floor lost the same bits, give or take the last round's one
        lost = [sum(p) - sum(q) for p, q in zip(requested, repaired) if q != (2, 2)]
        assert max(lost, default=0) - min(lost, default=0) <= 1


@pytest.mark.parametrize("rule", ["ceiling", "shift"])
def test_repairs_fall_back_to_the_cheapest_policy_where_the_lowest_widths_do_not_fit(rule: str) -> None:
    # boundaries of 60: (2, 2) (4, 2) (2, 2) pays two changes (111 + 120) and no width of it can go lower;
    # the plan's (2, 4) (2, 4) (2, 2) pays one (112 + 60)
    bm = _model(absolute=200.0, table=ChainHandTable(boundary=60.0))
    assert lower_to_fit([(2, 2), (4, 2), (2, 2)], bm, rule) == bm.plan.path() == [(2, 4), (2, 4), (2, 2)]


def test_an_episode_is_projected_layer_by_layer_or_repaired_whole() -> None:
    bm = _model(absolute=120.0, table=ChainHandTable(costs=FULL_GRID))
    request = [(8, 8), (8, 8), (8, 8)]
    stepwise: list[BitPair] = []
    for choices, want in zip(bm.layers, request):  # the environment's stepwise rule, spelled out

        def fits(pair: BitPair, done: tuple[BitPair, ...] = tuple(stepwise)) -> bool:
            return bm.fits(bm.completion_cost(done, pair))

        stepwise.append(project(want, choices, fits, bm.fallback(stepwise)))
    assert project_episode(request, bm, "stepwise") == tuple(stepwise)
    for rule in ("shift", "ceiling"):
        assert project_episode(request, bm, rule) == tuple(lower_to_fit(request, bm, rule))
    # the projections do not all agree on this request, so the comparisons above can fail
    assert len({project_episode(request, bm, p) for p in PROJECTIONS}) > 1
    with pytest.raises(ConfigError, match="2 requests for 3 layers"):
        project_episode(request[:2], bm, "stepwise")
    with pytest.raises(ConfigError, match="choose one of stepwise, shift, ceiling"):
        project_episode(request, bm, "greedy")


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_a_random_draw_is_the_episode_of_its_requests_under_the_projection(projection: str) -> None:
    bm = _model(absolute=150.0, table=ChainHandTable(costs=FULL_GRID))
    for seed in range(20):
        draws = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(len(bm.layers), 2))
        requests = [map_action(u, choices.pairs) for u, choices in zip(draws, bm.layers)]
        assert random_assignment(bm, np.random.default_rng(seed), projection) == project_episode(requests, bm, projection)
