"""Exploration pieces of the agent: the per-episode shift noise and the actor's centred start."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from haq.core.errors import ConfigError
from haq.search.agents import make_agent
from haq.search.config import AGENTS, AgentConfig
from haq.search.noise import BatchNoise, DecayingTruncatedNormalNoise, noise_from_dict


def test_shift_is_shared_within_an_episode_and_redrawn_at_reset() -> None:
    noise = DecayingTruncatedNormalNoise(2, 0.0 + 1e-12, 1.0, 0, shift=0.3, seed=4)
    first = [noise() for _ in range(5)]
    assert all(np.allclose(x, first[0], atol=1e-9) for x in first)  # per-layer part ~0: only the shift
    assert np.all(np.abs(first[0]) <= 2 * 0.3 + 1e-9) and np.any(first[0] != 0)  # truncated at 2 sigma
    noise.reset()
    assert not np.allclose(noise(), first[0])


def test_shift_std_matches_and_decays() -> None:
    noise = DecayingTruncatedNormalNoise(1, 1e-12, 0.5, 0, shift=0.4, seed=1)
    draws = []
    for _ in range(4000):
        assert noise.scale == pytest.approx(0.5**noise.episodes)
        draws.append(float(noise()[0]) / noise.scale)
        noise.reset()
        if noise.episodes > 3:
            noise.episodes, noise.scale = 0, 1.0
    # truncated at ±2σ the std is 0.88σ (analytic: sqrt(1 - 2·2·φ(2)/(Φ(2)-Φ(-2))))
    assert abs(np.std(draws) - 0.4 * 0.880) < 0.02


def test_no_shift_keeps_the_old_stream() -> None:
    a = DecayingTruncatedNormalNoise(2, 0.3, 0.9, 1, seed=7)
    b = DecayingTruncatedNormalNoise(2, 0.3, 0.9, 1, seed=7, shift=0.0)
    for _ in range(3):
        np.testing.assert_array_equal(a(), b())
        a.reset()
        b.reset()


@pytest.mark.parametrize("batch", [False, True])
def test_shift_state_round_trips(batch: bool) -> None:
    noise: DecayingTruncatedNormalNoise | BatchNoise = DecayingTruncatedNormalNoise(2, 0.2, 0.9, 0, seed=3, shift=0.3)
    if batch:
        noise = BatchNoise.fresh(2, 0.2, 0.9, 0, 2, seed=3, shift=0.3)
    noise()
    state = noise.to_dict()
    copy = noise_from_dict(state)
    np.testing.assert_array_equal(np.asarray(noise()), np.asarray(copy()))
    bad = {**state, "shift_draw": [0.1]} if not batch else {"batch": [{**s, "shift_draw": "x"} for s in state["batch"]]}
    with pytest.raises(ValueError):
        noise_from_dict(bad)


class _Line(gym.Env[np.ndarray, np.ndarray]):
    observation_space = spaces.Box(0.0, 1.0, (3,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.full(3, 0.5, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.full(3, 0.5, np.float32), 0.0, True, False, {}


@pytest.mark.parametrize("algo", AGENTS)
def test_centred_start_acts_at_zero(algo: str) -> None:
    obs = np.random.default_rng(0).uniform(0, 1, (6, 3)).astype(np.float32)
    plain = make_agent(AgentConfig(algo=algo), _Line(), 1, 10, seed=0)
    centred = make_agent(AgentConfig(algo=algo, start_at_centre=True, initial_log_std=-2.0), _Line(), 1, 10, seed=0)
    np.testing.assert_allclose(centred.predict(obs, deterministic=True)[0], 0.0, atol=1e-7)
    assert np.abs(plain.predict(obs, deterministic=True)[0]).max() > 1e-3
    if algo in ("sac", "ppo"):
        spread = np.std([centred.predict(obs[:1], deterministic=False)[0] for _ in range(300)])
        assert 0.05 < spread < 0.3  # std of tanh(N(0, e^-2)) ≈ 0.13
    target = getattr(centred, "actor_target", None)
    if target is not None:
        np.testing.assert_allclose(target(__import__("torch").as_tensor(obs)).detach().numpy(), 0.0, atol=1e-7)


def test_sparse_noise_moves_about_the_asked_share_of_layers() -> None:
    noise = DecayingTruncatedNormalNoise(2, 0.3, 1.0, 0, seed=5, active=0.1)
    moved = np.mean([np.any(noise() != 0) for _ in range(4000)])
    assert abs(moved - 0.1) < 0.02
    dense = DecayingTruncatedNormalNoise(2, 0.3, 1.0, 0, seed=5)
    assert all(np.any(dense() != 0) for _ in range(100))
    copy = noise_from_dict(noise.to_dict())
    np.testing.assert_array_equal([noise() for _ in range(20)], [copy() for _ in range(20)])


def test_centred_agent_noise_moves_a_few_layers() -> None:
    cfg = AgentConfig(algo="ddpg").for_problem(True)
    agent = make_agent(cfg, _Line(), 30, 10, seed=0)
    assert agent.action_noise is not None and abs(agent.action_noise.active - 3.0 / 30) < 1e-12
    plain = make_agent(AgentConfig(algo="ddpg").for_problem(False), _Line(), 30, 10, seed=0)
    assert plain.action_noise is not None and plain.action_noise.active == 1.0


def test_quiet_first_episode_then_noise() -> None:
    noise = DecayingTruncatedNormalNoise(2, 0.3, 1.0, 0, seed=2, quiet=1)
    noise.reset()  # stable-baselines3 resets the noise when learn() starts: not an episode
    assert all(not np.any(noise()) for _ in range(10))
    restored = noise_from_dict(noise.to_dict())
    noise.reset()
    restored.reset()
    assert any(np.any(noise()) for _ in range(10)) and any(np.any(restored()) for _ in range(10))
    batch = BatchNoise.fresh(2, 0.3, 1.0, 0, 3, seed=2, quiet=1)
    first = batch()
    assert not np.any(first[0]) and np.any(first[1:])  # only the first environment's first episode is the prior


def test_a_fresh_agent_leaves_no_log_folder_behind(tmp_path, monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where stable-baselines3's default logger writes
    make_agent(AgentConfig(algo="ddpg", hidden=(8,)), _Line(), 1, 4, seed=0).learn(total_timesteps=2)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("SB3-")]


def test_a_repeat_reheats_sigma_up_to_its_start_and_a_new_policy_cools_it() -> None:
    noise = DecayingTruncatedNormalNoise(2, 0.4, 0.5, 1, seed=0, reheat=3.0)
    noise.reset()
    noise.mark_repeat()
    noise.reset()  # still in the warm-up: σ stays whatever the episode was
    assert noise.current_sigma == 0.4
    scales = []
    for repeat in (False, False, False, True, False, True, True, True):
        if repeat:
            noise.mark_repeat()
        noise.reset()
        scales.append(noise.scale)
    assert scales == pytest.approx([0.5, 0.25, 0.125, 0.375, 0.1875, 0.5625, 1.0, 1.0])
    plain = DecayingTruncatedNormalNoise(2, 0.4, 0.5, 0, seed=0)
    plain.mark_repeat()
    plain.reset()
    assert plain.scale == 0.5  # without reheat a repeat decays like any episode


@pytest.mark.parametrize("batch", [False, True])
def test_reheat_state_round_trips_and_an_old_state_keeps_its_schedule(batch: bool) -> None:
    noise: DecayingTruncatedNormalNoise | BatchNoise
    if batch:
        noise = BatchNoise.fresh(2, 0.3, 0.9, 0, 2, seed=1, reheat=2.0)
        noise.mark_repeat(1)
        noise.reset([0, 1])
        noise.mark_repeat(0)  # marked, not yet read
        assert [n.scale for n in noise.noises] == pytest.approx([0.81, 1.0])
    else:
        noise = DecayingTruncatedNormalNoise(2, 0.3, 0.9, 0, seed=1, reheat=2.0)
        noise.reset()
        noise.mark_repeat()
    copy = noise_from_dict(noise.to_dict())
    noise.reset()
    copy.reset()
    np.testing.assert_array_equal(np.asarray(noise()), np.asarray(copy()))
    old = DecayingTruncatedNormalNoise(2, 0.3, 0.9, 2, seed=1).to_dict()
    for key in ("scale", "repeat", "reheat"):
        old.pop(key)
    old["episodes"] = 5
    assert noise_from_dict(old).current_sigma == pytest.approx(0.3 * 0.9**3)
    with pytest.raises(ValueError):
        noise_from_dict({**old, "scale": 1.5})


def test_reheat_is_off_by_default_and_a_centred_agent_takes_its_own() -> None:
    assert AgentConfig(algo="ddpg").for_problem(True).noise_reheat is None
    assert AgentConfig(algo="ddpg", centred_noise_reheat=2.0).for_problem(True).noise_reheat == 2.0
    assert AgentConfig(algo="ddpg", noise_reheat=3.0, centred_noise_reheat=2.0).for_problem(False).noise_reheat == 3.0
    agent = make_agent(AgentConfig(algo="ddpg", centred_noise_reheat=2.0).for_problem(True), _Line(), 30, 10, seed=0)
    assert agent.action_noise is not None and agent.action_noise.reheat == 2.0
    with pytest.raises(ConfigError, match="noise_reheat must be >= 1"):
        AgentConfig(noise_reheat=0.5)


def test_sac_target_entropy_is_per_action_dimension_and_bounded() -> None:
    assert make_agent(AgentConfig(algo="sac"), _Line(), 4, 10, seed=0).target_entropy == -2.0  # stable-baselines3's -dim
    wide = make_agent(AgentConfig(algo="sac", target_entropy=-0.5), _Line(), 4, 10, seed=0)
    assert wide.target_entropy == pytest.approx(-1.0)
    with pytest.raises(ConfigError, match="target_entropy must be <= 0.693"):
        AgentConfig(target_entropy=1.0)
