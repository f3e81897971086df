"""``bench/policy_signal.py``: a reward the whole policy determines is ranked near perfectly, one
it does not is not, and a file that is not a run's log is one line."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from bench_scripts import bench_module

LAYERS = ("conv1", "conv2", "fc")


@pytest.fixture(scope="module")
def ps() -> ModuleType:
    return bench_module("policy_signal")


def _log(run: Path, rewards_of: object, n: int = 120, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    run.mkdir(parents=True)
    lines = []
    for episode in range(n):
        bits = rng.integers(2, 9, (len(LAYERS), 2))
        policy = {name: [int(w), int(a)] for name, (w, a) in zip(LAYERS, bits)}
        lines.append(json.dumps({"episode": episode, "policy": policy, "reward": rewards_of(bits, rng)}))  # type: ignore[operator]
    (run / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_a_reward_set_by_the_whole_policy_is_ranked_and_noise_is_not(ps: ModuleType, tmp_path: Path) -> None:
    weights = np.array([[3.0, 1.0], [0.5, 2.0], [4.0, 0.2]])
    linear = _log(tmp_path / "linear", lambda bits, _: float(-(weights * np.exp2(-bits)).sum()))
    noise = _log(tmp_path / "noise", lambda _, rng: float(rng.normal()))
    x, y = ps.read_log(linear)
    assert x.shape == (120, 2 * len(LAYERS)) and np.all((x > 0) & (x <= 0.25))
    assert ps.held_out_rank(x, y, 80, 1e-3) > 0.99
    x, y = ps.read_log(noise)
    assert abs(ps.held_out_rank(x, y, 80, 0.1)) < 0.4
    with pytest.raises(ValueError, match="--fit must leave at least 2 episodes on each side of 120, got 119"):
        ps.held_out_rank(x, y, 119, 0.1)


def test_a_file_that_is_not_a_runs_log_is_one_line(ps: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "episodes.jsonl").write_text('{"episode": 0}\n')
    with pytest.raises(SystemExit, match=r"episodes.jsonl: not a run's episode log \(KeyError"):
        ps.read_log(tmp_path / "bad")
    assert ps.main([str(_log(tmp_path / "ok", lambda bits, _: float(bits.sum()))), "--fit", "60"]) == 0
