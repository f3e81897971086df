"""The agent learns: after a modest budget its deterministic rollout beats most random policies.

Setting: the embedded default (digits CNN, shipped Bit Fusion table, bits 2..8, half the uniform
8-bit latency) with the cheap (real, PTQ) evaluator and the default agent (SAC). Random policies
are uniform actions through the same budget projection; the trained actor must score above their
75th percentile after 100 episodes for each of three seeds (slow), and above their median after
50 episodes for one seed (fast).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from envs.mixed_precision import MixedPrecisionEnv
from haq.commands.problems import make_problem
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.search.agents import load_agent
from haq.search.config import AgentConfig, SearchConfig
from haq.search.run import run_search

ENV = EnvConfig()
RANDOM_POLICIES = 60
FAST_EPISODES = 50
SLOW_EPISODES = 100


@pytest.fixture(scope="module")
def problem(cache_dir: Path) -> SearchProblem:
    return make_problem(ENV, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def random_rewards(problem: SearchProblem) -> np.ndarray:
    env = MixedPrecisionEnv(problem=problem)
    rng = np.random.default_rng(12345)
    rewards = []
    for _ in range(RANDOM_POLICIES):
        env.reset()
        for _ in range(env.num_layers):
            _, reward, _, _, _ = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
        rewards.append(reward)
    return np.asarray(rewards)


def _trained_rollout(problem: SearchProblem, tmp: Path, algo: str, episodes: int, seed: int) -> float:
    cfg = SearchConfig(env=ENV, agent=AgentConfig(algo=algo), episodes=episodes, seed=seed)
    run_search(cfg, problem, tmp)
    env = MixedPrecisionEnv(problem=problem)
    model, _ = load_agent(next((tmp / "checkpoint").glob("ep-*")), env, with_buffer=False)
    obs, _ = env.reset(seed=seed)
    for _ in range(env.num_layers):
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, _, _, _ = env.step(action)
    return float(reward)


def test_sac_beats_random_median_fast(tmp_path: Path, problem: SearchProblem, random_rewards: np.ndarray) -> None:
    """The quick variant: half the budget, one seed, a weaker bar (the median)."""
    assert _trained_rollout(problem, tmp_path, "sac", FAST_EPISODES, seed=0) > np.percentile(random_rewards, 50)


@pytest.mark.slow
def test_sac_beats_random_p75_over_seeds(tmp_path: Path, problem: SearchProblem, random_rewards: np.ndarray) -> None:
    p75 = np.percentile(random_rewards, 75)
    rewards = [_trained_rollout(problem, tmp_path / str(seed), "sac", SLOW_EPISODES, seed) for seed in range(3)]
    assert all(r > p75 for r in rewards), (rewards, p75)
