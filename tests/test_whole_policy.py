"""An agent that decides the whole policy in one step (``AgentConfig.decision = "policy"``): its
step is the environment's episode of the same actions, its runs are resumable like any search,
and it is refused as a transfer source, its actions bins of its own model on its own device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from run_helpers import episode_log, interrupted_search, with_empty_cache

from envs.mixed_precision import MixedPrecisionEnv
from envs.vector import MixedPrecisionVecEnv
from haq.core.errors import ConfigError
from haq.evaluation.config import EvalConfig
from haq.jobs.problems import make_problem
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.search.config import AgentConfig, SearchConfig
from haq.search.credit import VecCostCredit
from haq.search.run import run_search
from haq.search.whole_policy import APPLIED, VecWholePolicy
from haq.transfer import TransferConfig, run_transfer, transfer_env

CHEAP = EvalConfig(kind="cheap", val_samples=120)
WHOLE = AgentConfig(algo="sac", decision="policy", warmup_episodes=2, hidden=(16,))


@pytest.fixture(scope="module", params=["stepwise", "ceiling"])
def problem(request: pytest.FixtureRequest, cache_dir: Path) -> SearchProblem:
    return make_problem(EnvConfig(evaluation=CHEAP, projection=request.param), cache_dir=cache_dir)


def _per_layer(problem: SearchProblem, actions: np.ndarray) -> tuple[dict[str, object], bool]:
    """The last step's info of the episode of ``actions``, one layer per step, and whether the
    projection or the repair changed any request."""
    env = MixedPrecisionEnv(problem=problem)
    env.reset(seed=0)
    changed = False
    for action in actions:
        _, _, done, _, info = env.step(action)
        changed |= bool(info["projected"])
    assert done
    return info, changed or int(info["lowered"]) > 0


def test_a_whole_policy_step_is_the_per_layer_episode_of_its_actions(problem: SearchProblem) -> None:
    """The same actions give the same policy and reward in one step as in one step per layer, and
    the agent learns from what it asked (the per-layer applied action is not passed up)."""
    venv = MixedPrecisionVecEnv(problem, 1)
    layers = venv.num_layers
    whole = VecWholePolicy(venv, layers)
    assert whole.action_space.shape == (2 * layers,) and whole.observation_space.shape == (1,)
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(4):
        actions = rng.uniform(-1.0, 1.0, (layers, 2)).astype(np.float32)
        expected, was_changed = _per_layer(problem, actions)
        changed += was_changed
        assert np.array_equal(whole.reset(), np.ones((1, 1), np.float32))
        obs, rewards, dones, infos = whole.step(actions.reshape(1, -1))
        assert dones.tolist() == [True] and np.array_equal(obs, np.ones((1, 1), np.float32))
        assert infos[0]["policy"] == expected["policy"]
        assert rewards[0] == pytest.approx(expected["reward"]) and infos[0]["reward"] == expected["reward"]
        assert APPLIED not in infos[0] and np.array_equal(infos[0]["terminal_observation"], np.ones(1, np.float32))
    assert changed > 0  # some requests were over budget, so the projection or the repair was exercised


def test_under_the_cost_credit_a_whole_policy_step_is_paid_the_episodes_reward(problem: SearchProblem) -> None:
    """The credit pays each layer's cost at its step and settles at the last: their sum, the one
    step's reward, is the episode's."""
    venv = MixedPrecisionVecEnv(problem, 1)
    whole = VecWholePolicy(VecCostCredit(venv, problem.config.reward.cost_weight), venv.num_layers)
    actions = np.random.default_rng(1).uniform(-1.0, 1.0, (1, 2 * venv.num_layers)).astype(np.float32)
    whole.reset()
    _, rewards, _, infos = whole.step(actions)
    assert rewards[0] == pytest.approx(infos[0]["reward"], abs=1e-5)


def test_a_whole_policy_search_resumes_to_the_log_of_an_uninterrupted_one(problem: SearchProblem, tmp_path: Path) -> None:
    cfg = SearchConfig(env=problem.config, agent=WHOLE, episodes=6, seed=4)
    whole = run_search(cfg, with_empty_cache(problem), tmp_path / "whole")
    assert [r.episode for r in whole.records] == list(range(6))
    assert len({tuple(sorted(r.policy.items())) for r in whole.records}) > 1
    interrupted_search(cfg, problem, tmp_path / "killed", after=3)
    resumed = run_search(cfg, problem, tmp_path / "killed", resume=True)
    assert resumed.resumed_from == 4
    assert episode_log(tmp_path / "killed") == episode_log(tmp_path / "whole")


def test_a_whole_policy_agent_is_refused_as_a_transfer_source_in_one_line(cache_dir: Path, tmp_path: Path) -> None:
    cfg = SearchConfig(env=EnvConfig(evaluation=CHEAP), agent=WHOLE, episodes=2, seed=0)
    run_search(cfg, make_problem(cfg.env, cache_dir=cache_dir), tmp_path / "source")
    transfer = TransferConfig(source=str(tmp_path / "source"), table="bismo-edge", episodes=1)
    refused = r"^the source agent decides every layer's bits in one step \(agent.decision = 'policy'\), .*\('objective'\)$"
    with pytest.raises(ConfigError, match=refused):
        run_transfer(transfer, make_problem(transfer_env(transfer), cache_dir=cache_dir), tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_an_unknown_decision_is_one_line_naming_the_valid_ones() -> None:
    valid = "auto, layer, policy, objective, portfolio"
    with pytest.raises(ConfigError, match=rf"^unknown decision 'episode'; choose one of {valid}$"):
        AgentConfig(decision="episode")


def test_a_whole_policy_agent_is_sac_unless_asked_otherwise_and_never_ddpg_or_td3() -> None:
    assert AgentConfig(decision="policy").for_problem(True).algo == "sac"
    assert AgentConfig(decision="policy").for_problem(False).algo == "sac"
    assert AgentConfig(decision="policy", algo="ppo").for_problem(True).algo == "ppo"
    assert AgentConfig(decision="layer").for_problem(True).algo == "ddpg"  # the centred per-layer agent is unchanged
    assert AgentConfig().for_problem(True).algo == "sac"  # the default there, the objective agent
    for algo in ("ddpg", "td3"):
        with pytest.raises(ConfigError, match=rf"^decision 'policy' needs agent sac, ppo or auto, not {algo}: "):
            AgentConfig(decision="policy", algo=algo)
