"""The transfer benchmark's quarter rule, tallied on hand-made curves: which comparisons meet it,
which misses a later, better policy of the transfer caused, and in which a quarter was possible."""

from __future__ import annotations

import math
from types import ModuleType

import pytest
from bench_scripts import bench_module


@pytest.fixture(scope="module")
def tr() -> ModuleType:
    return bench_module("transfer")


def _pair(tr: ModuleType, zero_shot: float, best: float, best_at: int, seed: int) -> object:
    return tr.Pair("cnn", "a", "cnn", "b", seed, zero_shot, 0, False, best, best_at, 0.0)


def test_quarter_tally_and_the_misses_a_late_improvement_caused(tr: ModuleType) -> None:
    mode = tr.Mode(("cnn",), (0,), 12, 3, cross_model=False)
    scratch = [0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.6, 0.6, 0.6, 0.6, 0.9]  # reaches 0.5 at 5, 0.6 at 8, 0.9 at 12
    pairs = [
        _pair(tr, 0.5, 0.5, 1, 0),  # met: 1 <= 5 / 4
        _pair(tr, 0.5, 0.6, 3, 1),  # missed late: 3 > 8 / 4, yet the zero-shot alone (1 <= 5 / 4) was within
        _pair(tr, 0.0, 0.9, 3, 2),  # met: 3 <= 12 / 4
        _pair(tr, 0.0, 0.6, 3, 3),  # missed, the zero-shot matched at scratch's first episode: not late
        _pair(tr, 0.0, 0.0, 1, 4),  # missed where no transfer can meet it: scratch matched at its first episode
    ]
    _, tally = tr.matrix(mode, pairs, {("cnn", "b"): [scratch]}, {("cnn", "b"): 0})
    assert (tally["quarter_met"], tally["comparisons"], tally["missed_late"]) == (2, 5, 1)
    assert tally["possible"] == 4  # scratch needed 5, 8, 12 and 8 episodes there, 1 in the last


def test_rank_agreement_of_a_predictor_with_exact_rewards(tr: ModuleType) -> None:
    exact = [0.1 * i for i in range(10)]
    rho, top, best = tr.rank_agreement(exact, exact)  # a perfect ranking
    assert (rho, top, best) == (pytest.approx(1.0), exact[-1], exact[-1])
    rho, top, _ = tr.rank_agreement([-v for v in exact], exact)  # reversed: its five best are the five worst
    assert rho == pytest.approx(-1.0) and top == pytest.approx(0.4)
    rho, _, _ = tr.rank_agreement([1.0] * 10, exact)  # a constant prediction ranks nothing
    assert math.isnan(rho)
