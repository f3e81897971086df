"""The cheapest / dearest completions of a chain of layers with boundary costs: exact against
brute force, consistent from step to step (what keeps a projected episode within budget)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haq.core.errors import ConfigError
from haq.tables.plan import chain_plan

PAIRS = [(2, 2), (4, 4), (8, 8), (32, 32)]


@st.composite
def chains(draw: st.DrawFn) -> tuple[list[dict[tuple[int, int], float]], list[list[tuple[int, int]]], dict]:
    n = draw(st.integers(1, 4))
    allowed = [draw(st.lists(st.sampled_from(PAIRS), min_size=1, max_size=4, unique=True)) for _ in range(n)]
    cost = st.floats(0.0, 10.0, allow_nan=False)
    costs = [{p: draw(cost) for p in a} for a in allowed]
    links = {(i, p, q): draw(cost) for i in range(1, n) for p in allowed[i - 1] for q in allowed[i]}
    return costs, allowed, links


def _total(costs, links, path, start: int = 0) -> float:  # type: ignore[no-untyped-def]
    """Cost of layers ``start`` .. end at ``path`` (one pair each), boundaries between them included."""
    layers = [c[p] for c, p in zip(costs[start:], path)]
    joins = [links[(start + k, path[k - 1], path[k])] for k in range(1, len(path))]
    return sum(layers) + sum(joins)


@given(chains(), st.booleans())
@settings(max_examples=200, deadline=None)
def test_the_plan_is_the_brute_force_optimum_from_every_layer_and_pair(chain, dearest: bool) -> None:  # type: ignore[no-untyped-def]
    costs, allowed, links = chain
    best = max if dearest else min
    plan = chain_plan(costs, allowed, lambda i, p, q: links[(i, p, q)], dearest)
    every = list(itertools.product(*allowed))
    assert _total(costs, links, plan.path()) == pytest.approx(best(_total(costs, links, p) for p in every))
    for i in range(len(allowed)):
        for pair in allowed[i]:
            rest = plan.rest(i, pair)
            assert len(rest) == len(allowed) - i - 1 and all(q in a for q, a in zip(rest, allowed[i + 1 :]))
            tails = [p[i + 1 :] for p in every if p[i] == pair]
            finish = best(_total(costs, links, (pair, *t), i) for t in tails)
            assert _total(costs, links, (pair, *rest), i) == pytest.approx(finish)
    # Bellman: the pair that continues a prefix on its best completion leads to that same completion
    path = plan.path()
    for i in range(1, len(path)):
        assert plan.next_pair(path[:i]) == path[i]
        assert plan.rest(i - 1, path[i - 1]) == [path[i], *plan.rest(i, path[i])]


def test_additive_costs_take_each_layers_cheapest_pair_highest_widths_on_ties() -> None:
    costs = [{(2, 4): 1.0, (4, 2): 1.0, (8, 8): 3.0}, {(2, 2): 5.0, (8, 8): 0.5}]
    plan = chain_plan(costs, [list(c) for c in costs])
    assert plan.path() == [(4, 2), (8, 8)]
    assert chain_plan(costs, [list(c) for c in costs], dearest=True).path() == [(8, 8), (2, 2)]


def test_bad_plans_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="one set of allowed pairs per layer"):
        chain_plan([{(8, 8): 1.0}], [])
    with pytest.raises(ConfigError, match=r"layer 0: allowed pairs \[\(4, 4\)\] must be non-empty and priced"):
        chain_plan([{(8, 8): 1.0}], [[(4, 4)]])
