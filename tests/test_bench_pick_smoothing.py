"""The pick benchmark's smoothed ranking: a ridge fit of a run's rewards on per-layer widths."""

from __future__ import annotations

import itertools
import json
from types import ModuleType

import numpy as np
import pytest
from bench_scripts import bench_module

from haq.quant import QuantPolicy

LAYERS = ("conv1", "conv2", "fc")
PART = {"conv1": {2: -0.6, 4: -0.1, 8: 0.0}, "conv2": {2: -0.9, 4: -0.2, 8: 0.0}, "fc": {2: -0.3, 4: -0.05, 8: 0.0}}


@pytest.fixture(scope="module")
def pr() -> ModuleType:
    return bench_module("pick_rules")


def _log(noise: float, seed: int = 0) -> tuple[list[tuple[QuantPolicy, float]], list[float]]:
    rng = np.random.default_rng(seed)
    policies, truth = [], []
    for widths in itertools.product((2, 4, 8), repeat=len(LAYERS)):
        policies.append(QuantPolicy.from_pairs([(n, (w, 8)) for n, w in zip(LAYERS, widths)]))
        truth.append(1.0 + sum(PART[n][w] for n, w in zip(LAYERS, widths)))
    return [(p, t + noise * rng.standard_normal()) for p, t in zip(policies, truth)], truth


def test_an_additive_reward_is_recovered_within_the_ridge_bias(pr: ModuleType) -> None:
    logged, truth = _log(noise=0.0)
    fitted = pr.smoothed_rewards(logged, ridge=1e-6)
    assert max(abs(f - t) for f, t in zip(fitted, truth)) < 1e-4
    # a balanced design (9 policies at each layer's width): ridge shrinks each effect by 9 / (9 + 1) toward the mean
    shrunk = pr.smoothed_rewards(logged, ridge=1.0)
    mean = float(np.mean(truth))
    assert shrunk == pytest.approx([mean + 0.9 * (t - mean) for t in truth], abs=1e-9)


def test_smoothing_cuts_the_noise_and_a_repeat_gets_one_value(pr: ModuleType) -> None:
    logged, truth = _log(noise=0.2, seed=3)
    fitted = pr.smoothed_rewards(logged)
    raw_error = np.sqrt(np.mean([(r - t) ** 2 for (_, r), t in zip(logged, truth)]))
    fitted_error = np.sqrt(np.mean([(f - t) ** 2 for f, t in zip(fitted, truth)]))
    assert fitted_error < 0.7 * raw_error
    again = pr.smoothed_rewards([*logged, (logged[5][0], 99.0)])  # a repeat keeps its first reward (a cached lookup)
    assert again[-1] == pytest.approx(again[5]) and again[:-1] == pytest.approx(fitted)


def test_a_version_1_scores_line_reads_as_ranked_by_search_reward(pr: ModuleType) -> None:
    row = {"format": pr.FORMAT, "version": 1, "run": "r", "model": "m", "method": "rl", "seed": 0}
    row |= {"search_images": 300, "half_images": 180, "search": [1.0], "first": [0.9], "second": [0.8]}
    assert pr.Scores.from_json(json.dumps(row)).rank == "search"
    with pytest.raises(pr.HaqError, match="remove the file"):
        pr.Scores.from_json(json.dumps({**row, "version": 2, "rank": "lucky"}))
